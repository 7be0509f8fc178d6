// A Communicator decorator that accumulates wall time and payload bytes per operation
// kind, so the benchmarks can split a step into compute and communication.
#ifndef PHI_BENCH_PARALLEL_TIMED_COMMUNICATOR_H_
#define PHI_BENCH_PARALLEL_TIMED_COMMUNICATOR_H_

#include <chrono>
#include <string>

#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel::bench {

struct OpTotals {
  uint64_t calls = 0;
  uint64_t bytes = 0;  // payload per rank (what this rank contributes)
  double seconds = 0;
};

class TimedCommunicator final : public Communicator {
 public:
  explicit TimedCommunicator(Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  std::string name() const override { return inner_->name(); }
  absl::Status AllReduceSum(void* data, size_t count, DataType dtype) override {
    return Time(&all_reduce, count * DataTypeSize(dtype), [&] { return inner_->AllReduceSum(data, count, dtype); });
  }
  using Communicator::AllReduceSum;
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return Time(&broadcast, bytes, [&] { return inner_->Broadcast(data, bytes, root); });
  }
  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank) override {
    return Time(&all_gather, bytes_per_rank, [&] { return inner_->AllGather(in, out, bytes_per_rank); });
  }
  absl::Status Barrier() override { return Time(&barrier, 0, [&] { return inner_->Barrier(); }); }

  void Reset() { all_reduce = broadcast = all_gather = barrier = {}; }

  OpTotals all_reduce, broadcast, all_gather, barrier;

 private:
  template <typename Fn>
  absl::Status Time(OpTotals* t, size_t bytes, Fn&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status s = fn();
    t->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t->calls += 1;
    t->bytes += bytes;
    return s;
  }
  Communicator* inner_;
};

}  // namespace phi::worker::parallel::bench

#endif  // PHI_BENCH_PARALLEL_TIMED_COMMUNICATOR_H_
