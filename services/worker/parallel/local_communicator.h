// The communicator of a group of one: every collective is the identity (all-gather a
// copy). Lets the same runner code serve N = 1 without a transport.
#ifndef PHI_SERVICES_WORKER_PARALLEL_LOCAL_COMMUNICATOR_H_
#define PHI_SERVICES_WORKER_PARALLEL_LOCAL_COMMUNICATOR_H_

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string name() const override { return "local"; }
  absl::Status AllReduceSum(void*, size_t, DataType) override { return absl::OkStatus(); }
  using Communicator::AllReduceSum;
  absl::Status Broadcast(void*, size_t, int root) override {
    if (root != 0) return absl::InvalidArgumentError(absl::StrCat("broadcast: root ", root, " in a group of one"));
    return absl::OkStatus();
  }
  // `out` is host memory here (a group of one has no device transport).
  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank) override {
    if (bytes_per_rank > 0) std::memcpy(out, in, bytes_per_rank);
    return absl::OkStatus();
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_LOCAL_COMMUNICATOR_H_
