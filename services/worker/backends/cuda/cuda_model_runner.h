// The CUDA ModelRunner: a Phi checkpoint loaded into BF16 on one GPU (PhiCudaModel), the KV
// cache sized from the GPU memory left after the weights, its elements BF16 or, with
// options.model.kv_dtype = KvCacheDtype::kFp8E4m3, FP8 E4M3 (half the bytes per block:
// KvBlockBytes and KvBlocksThatFit follow). Step honours
// SequenceStep::num_candidates: such a row is reduced on the GPU to its top candidates and
// log-sum-exp (top_candidates_forward), and only that record leaves the device, unless the
// candidates do not cover what the sampler could keep (CandidatesCover: ties at the cut),
// when the whole row is copied instead (step_logits_plan.h). Tensor-parallel ranks gather
// each rank's records of its vocabulary slice for such rows instead of the slices.
//
// Usage:
//   PHI_ASSIGN_OR_RETURN(auto runner, CudaModelRunner::Create(model_dir, {}));
//   PHI_ASSIGN_OR_RETURN(int32_t blocks, runner->KvBlocksThatFit(16));
//   PHI_RETURN_IF_ERROR(runner->AllocateKvCache({.num_blocks = blocks, .block_size = 16}));
//
// LoRA: options.model.max_adapter_slots slots (SetAdapter slices the adapter for this rank with
// lora::SliceForShard and the model copies it to the device); SequenceStep::adapter_slot
// picks one per sequence.
//
// Tensor parallelism: with rank/world_size and make_comm, the runner opens the checkpoint for
// its shard (model::ShardSpec: each rank reads only its slices), loads them, then asks
// make_comm for the group's communicator on the model's CUDA stream (NCCL) and runs the
// sharded forward pass over it (phi_cuda_model.h), mirroring CpuRunnerOptions::comm.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_CUDA_MODEL_RUNNER_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_CUDA_MODEL_RUNNER_H_

#include <functional>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "services/worker/backends/cuda/step_logits_plan.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/model/phi_checkpoint.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::cuda {

struct CudaRunnerOptions {
  int device = 0;  // -1: rank modulo the visible GPUs
  // Share of the GPU memory free after weights and step buffers that KvBlocksThatFit offers
  // to the KV cache (the rest stays for cuBLASLt, graphs and the CUDA context).
  double kv_memory_fraction = 0.9;
  // The model's capacities and KV cache type (kv_dtype, kv_scale: phi_cuda_model.h).
  PhiCudaOptions model;
  // Tensor-parallel rank and group size (heads, intermediate size and vocabulary must divide).
  int rank = 0;
  int world_size = 1;
  // Makes this rank's communicator for device buffers on `stream` (the model's stream), e.g.
  // NcclCommunicator::Create(&group.store(), rank, world_size, {device, stream}). Required
  // when world_size > 1; given with world_size == 1 the sharded path runs as a group of one.
  struct Comm {
    std::unique_ptr<parallel::Communicator> comm;
    // For a communicator whose calls only enqueue (NcclOptions::wait_each_operation = false):
    // the bounded wait for all of them (NcclCommunicator::Synchronize), run once per step.
    // Null when every call finishes before it returns.
    std::function<absl::Status()> synchronize;
  };
  using CommFactory = std::function<absl::StatusOr<Comm>(int device, cudaStream_t stream)>;
  CommFactory make_comm;
};

class CudaModelRunner final : public ModelRunner {
 public:
  // `<model_dir>`: config.json, generation_config.json, safetensors, tokenizer.json's size.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Create(
      const std::string& model_dir, const CudaRunnerOptions& options = {});
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Create(
      const model::PhiCheckpoint& checkpoint, const CudaRunnerOptions& options = {});

  ~CudaModelRunner() override;

  // The number of usable GPUs; FAILED_PRECONDITION naming the missing GPU when there is none
  // (callers check before joining a group, so a GPU-less rank fails at once).
  static absl::StatusOr<int> VisibleGpus();

  const ModelShape& shape() const override { return shape_; }
  absl::Status AllocateKvCache(const KvCacheSpec& spec) override;
  int64_t KvBlockBytes(int32_t block_size) const override;
  absl::Status Step(const StepBatch& batch, StepLogits* out) override;
  int32_t max_adapter_slots() const override { return model_->max_adapter_slots(); }
  absl::Status SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) override;

  // Blocks of `block_size` that fit in kv_memory_fraction of the free GPU memory; refused
  // with the numbers when not even one sequence of max_position_embeddings fits.
  absl::StatusOr<int32_t> KvBlocksThatFit(int32_t block_size) const;

  const CudaLogitsStats& logits_stats() const { return logits_stats_; }

  PhiCudaModel& model() { return *model_; }
  // generation_config.json (eos ids for the engine).
  const model::GenerationConfig& generation() const { return generation_; }
  // The group's communicator (null without make_comm).
  parallel::Communicator* comm() const { return comm_.get(); }

 private:
  CudaModelRunner() = default;
  absl::Status Load(const model::PhiCheckpoint& checkpoint);
  // Load's steps.
  static absl::Status CheckSupported(const model::PhiConfig& config, const PhiCudaOptions& model);
  absl::Status SelectDevice(int rank);
  static PhiCudaConfig ModelConfig(const model::PhiConfig& config, int rank, int world);
  absl::Status UploadWeights(const model::PhiCheckpoint& checkpoint, const PhiCudaConfig& pc);
  absl::Status UploadLayer(const model::PhiCheckpoint& checkpoint, const PhiCudaConfig& pc, int i);
  absl::Status JoinGroup(const PhiCudaConfig& pc);
  absl::Status Run(const StepBatch& batch, PhiStepOutput* out);

  class Collectives;  // parallel::Communicator as PhiCudaCollectives

  CudaRunnerOptions options_;
  ModelShape shape_;
  model::PhiConfig config_;  // the checkpoint's (whole model): SetAdapter slices against it
  CudaLogitsStats logits_stats_;
  model::GenerationConfig generation_;
  // Destroyed in reverse: the adapter, then the communicator, then the model and its stream.
  std::unique_ptr<PhiCudaModel> model_;
  std::unique_ptr<parallel::Communicator> comm_;
  std::unique_ptr<Collectives> collectives_;
};

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_CUDA_MODEL_RUNNER_H_
