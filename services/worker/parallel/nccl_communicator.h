// Communicator over NCCL: device buffers, operations enqueued on the rank's CUDA stream.
// The unique id travels through the group's rendezvous store (rank 0 creates it). The
// communicator is non-blocking (ncclConfig_t.blocking = 0) so that every wait can be
// bounded: init and each operation are polled with ncclCommGetAsyncError and
// cudaStreamQuery until done or the timeout, then ncclCommAbort frees the peers' waits
// too. Built only with PHI_ENABLE_CUDA.
#ifndef PHI_SERVICES_WORKER_PARALLEL_NCCL_COMMUNICATOR_H_
#define PHI_SERVICES_WORKER_PARALLEL_NCCL_COMMUNICATOR_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/worker/parallel/communicator.h"
#include "services/worker/parallel/kv_client.h"

namespace phi::worker::parallel {

struct NcclOptions {
  int device = 0;                // CUDA device of this rank
  cudaStream_t stream = nullptr;  // the rank's stream (the backend's); null: the legacy default stream
  std::chrono::milliseconds timeout{10000};
  // true: each call returns after its operation finished on the stream (bounded by the
  // timeout). false: calls only enqueue; the caller runs Synchronize() once per step, which
  // keeps the stream busy and lets CUDA graphs capture the collectives.
  bool wait_each_operation = true;
  std::string store_key = "nccl/unique_id";
};

class NcclCommunicator final : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(KvClient* store, int rank,
                                                                  int world_size,
                                                                  const NcclOptions& options);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string name() const override { return "nccl"; }

  absl::Status AllReduceSum(void* data, size_t count, DataType dtype) override;
  using Communicator::AllReduceSum;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank) override;
  absl::Status Barrier() override;

  // Waits until every enqueued operation finished, at most the timeout; on timeout or an
  // asynchronous NCCL error aborts the communicator (peers' waits end too).
  absl::Status Synchronize();
  ncclComm_t comm() const { return comm_; }

 private:
  NcclCommunicator(int rank, int world_size, const NcclOptions& options);
  // Checks an enqueue's result (ncclInProgress is fine for a non-blocking comm).
  absl::Status Enqueued(const char* op, ncclResult_t result);
  absl::Status Finish(const char* op, ncclResult_t result);
  absl::Status Fail(absl::Status status);

  int rank_;
  int world_size_;
  NcclOptions options_;
  ncclComm_t comm_ = nullptr;
  float* barrier_scratch_ = nullptr;  // one float on the device
  absl::Status broken_;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_NCCL_COMMUNICATOR_H_
