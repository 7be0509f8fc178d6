// A tensor-parallel group of N ranks as threads of one process: collectives through a shared
// buffer and a barrier. Sums add the ranks' values in rank order, so every rank gets the same
// bits, as Gloo's ring does for two ranks.
#ifndef PHI_TESTS_CONFORMANCE_LORA_THREAD_COMMUNICATOR_H_
#define PHI_TESTS_CONFORMANCE_LORA_THREAD_COMMUNICATOR_H_

#include <barrier>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel::testing {

// What the ranks of one group share.
struct ThreadGroup {
  explicit ThreadGroup(int n) : size(n), sync(n), slots(static_cast<size_t>(n)) {}
  int size;
  std::barrier<> sync;
  std::vector<std::vector<char>> slots;  // slots[r]: rank r's contribution to a collective
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup* group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_->size; }
  std::string name() const override { return "threads"; }

  absl::Status AllReduceSum(void* data, size_t count, DataType dtype) override {
    if (dtype != DataType::kFloat32) return absl::UnimplementedError("threads: float32 sums only");
    Publish(data, count * sizeof(float));
    auto* out = static_cast<float*>(data);
    for (size_t i = 0; i < count; ++i) {
      float sum = 0;
      for (const auto& s : group_->slots) sum += reinterpret_cast<const float*>(s.data())[i];
      out[i] = sum;
    }
    group_->sync.arrive_and_wait();  // nobody publishes again before all have read
    return absl::OkStatus();
  }
  using Communicator::AllReduceSum;

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= group_->size) return absl::InvalidArgumentError(absl::StrCat("broadcast: root ", root));
    Publish(data, bytes);
    std::memcpy(data, group_->slots[static_cast<size_t>(root)].data(), bytes);
    group_->sync.arrive_and_wait();
    return absl::OkStatus();
  }

  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank) override {
    Publish(in, bytes_per_rank);
    for (int r = 0; r < group_->size; ++r) {
      std::memcpy(static_cast<char*>(out) + r * bytes_per_rank, group_->slots[static_cast<size_t>(r)].data(),
                  bytes_per_rank);
    }
    group_->sync.arrive_and_wait();
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    group_->sync.arrive_and_wait();
    return absl::OkStatus();
  }

 private:
  // Puts this rank's bytes where every rank can read them; returns once all have.
  void Publish(const void* data, size_t bytes) {
    auto& mine = group_->slots[static_cast<size_t>(rank_)];
    mine.assign(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
    group_->sync.arrive_and_wait();
  }

  ThreadGroup* group_;
  int rank_;
};

}  // namespace phi::worker::parallel::testing

#endif  // PHI_TESTS_CONFORMANCE_LORA_THREAD_COMMUNICATOR_H_
