// A Communicator for N ranks that are threads of one process (no timeouts: a test that
// breaks the collective order hangs until ctest's limit). Broadcast, all-gather and barrier
// only; the all-reduce is not needed by the tests that use it.
#ifndef PHI_TESTS_UNIT_WORKER_PARALLEL_THREAD_COMMUNICATOR_H_
#define PHI_TESTS_UNIT_WORKER_PARALLEL_THREAD_COMMUNICATOR_H_

#include <barrier>
#include <cstring>
#include <string>
#include <vector>

#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel::testing {

// What the ranks of one group share.
struct ThreadGroup {
  explicit ThreadGroup(int n) : size(n), sync(n) {}
  int size;
  std::barrier<> sync;
  std::vector<char> buf;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup* group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_->size; }
  std::string name() const override { return "threads"; }
  absl::Status AllReduceSum(void*, size_t, DataType) override { return absl::UnimplementedError("threads"); }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (rank_ == root) group_->buf.assign(static_cast<char*>(data), static_cast<char*>(data) + bytes);
    group_->sync.arrive_and_wait();
    if (rank_ != root) std::memcpy(data, group_->buf.data(), bytes);
    group_->sync.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status AllGather(const void* in, void* out, size_t bytes) override {
    if (rank_ == 0) group_->buf.assign(bytes * static_cast<size_t>(group_->size), 0);
    group_->sync.arrive_and_wait();
    std::memcpy(group_->buf.data() + static_cast<size_t>(rank_) * bytes, in, bytes);
    group_->sync.arrive_and_wait();
    std::memcpy(out, group_->buf.data(), bytes * static_cast<size_t>(group_->size));
    group_->sync.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status Barrier() override {
    group_->sync.arrive_and_wait();
    return absl::OkStatus();
  }

 private:
  ThreadGroup* group_;
  int rank_;
};

}  // namespace phi::worker::parallel::testing

#endif  // PHI_TESTS_UNIT_WORKER_PARALLEL_THREAD_COMMUNICATOR_H_
