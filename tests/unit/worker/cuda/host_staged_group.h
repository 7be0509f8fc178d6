// A tensor-parallel group of in-process ranks for the CUDA runner tests on ONE GPU: each rank a
// parallel::Communicator that moves device buffers through the host (no NCCL), so two
// CudaModelRunner ranks in two threads of one process form a group.
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_HOST_STAGED_GROUP_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_HOST_STAGED_GROUP_H_

#include <cuda_runtime.h>

#include <barrier>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::cuda::testing {

#define PHI_RETURN_IF_CUDA(call)                                                                   \
  do {                                                                                             \
    const cudaError_t phi_e_ = (call);                                                             \
    if (phi_e_ != cudaSuccess) return absl::InternalError(std::string(#call) + ": " + cudaGetErrorName(phi_e_)); \
  } while (0)

// Collectives of `world` in-process ranks on device buffers, through host copies; every call
// completes before it returns (so the runner needs no synchronize hook). Rank order sums make
// every rank's all-reduce bit-identical.
class HostStagedGroup {
 public:
  explicit HostStagedGroup(int world) : world_(world), barrier_(world), ptrs_(world) {}

  class Rank final : public parallel::Communicator {
   public:
    Rank(HostStagedGroup* g, int rank) : g_(g), rank_(rank) {}
    int rank() const override { return rank_; }
    int world_size() const override { return g_->world_; }
    std::string name() const override { return "host-staged-test"; }
    absl::Status AllReduceSum(void* data, size_t count, parallel::DataType dtype) override {
      if (dtype != parallel::DataType::kFloat32) return absl::UnimplementedError("float32 only");
      PHI_RETURN_IF_CUDA(cudaDeviceSynchronize());
      g_->ptrs_[rank_] = data;
      g_->barrier_.arrive_and_wait();
      std::vector<float> sum(count, 0.0f), part(count);
      for (int r = 0; r < g_->world_; ++r) {
        PHI_RETURN_IF_CUDA(cudaMemcpy(part.data(), g_->ptrs_[r], count * 4, cudaMemcpyDeviceToHost));
        for (size_t j = 0; j < count; ++j) sum[j] += part[j];
      }
      g_->barrier_.arrive_and_wait();  // every rank has read every buffer before any is written
      PHI_RETURN_IF_CUDA(cudaMemcpy(data, sum.data(), count * 4, cudaMemcpyHostToDevice));
      return absl::OkStatus();
    }
    using parallel::Communicator::AllReduceSum;
    absl::Status Broadcast(void*, size_t, int) override { return absl::UnimplementedError("not used"); }
    absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank) override {
      PHI_RETURN_IF_CUDA(cudaDeviceSynchronize());
      g_->ptrs_[rank_] = const_cast<void*>(in);
      g_->barrier_.arrive_and_wait();
      for (int r = 0; r < g_->world_; ++r) {
        PHI_RETURN_IF_CUDA(cudaMemcpy(static_cast<char*>(out) + r * bytes_per_rank, g_->ptrs_[r], bytes_per_rank,
                                      cudaMemcpyDeviceToDevice));
      }
      g_->barrier_.arrive_and_wait();
      return absl::OkStatus();
    }
    absl::Status Barrier() override {
      g_->barrier_.arrive_and_wait();
      return absl::OkStatus();
    }

   private:
    HostStagedGroup* g_;
    int rank_;
  };

 private:
  int world_;
  std::barrier<> barrier_;
  std::vector<void*> ptrs_;
};

#undef PHI_RETURN_IF_CUDA

}  // namespace phi::worker::cuda::testing

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_HOST_STAGED_GROUP_H_
