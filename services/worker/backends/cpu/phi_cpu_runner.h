// The CPU ModelRunner: Phi-1.5's forward pass (transformers' PhiForCausalLM) over a
// batch of sequences with a paged KV cache. Weights BF16 (default), F32 or INT8 (quantized
// at load, see WeightFormat), activations F32. Per layer two GEMMs: h = LN(x); [q|k|v|fc1] = h W_in^T + b_in;
// x += [attn(q,k,v) | gelu_new(fc1)] W_out^T + (b_dense + b_fc2)   (the parallel block).
// LoRA adapters (max_adapter_slots) add their low-rank deltas to both GEMMs' outputs, batched
// by adapter (cpu_lora.h).
//
// Usage:
//   PHI_ASSIGN_OR_RETURN(auto runner, phi::worker::cpu::CpuModelRunner::Create(model_dir, {}));
//   PHI_RETURN_IF_ERROR(runner->AllocateKvCache({.num_blocks = 256, .block_size = 16}));
//   PHI_RETURN_IF_ERROR(runner->Step(batch, &logits));
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_PHI_CPU_RUNNER_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_PHI_CPU_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/backends/cpu/cpu_lora.h"
#include "services/worker/backends/cpu/matmul.h"
#include "services/worker/backends/cpu/thread_pool.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/model/phi_checkpoint.h"
#include "services/worker/parallel/communicator.h"
#include "services/worker/parallel/vocab_gather.h"

namespace phi::worker::cpu {

struct CpuRunnerOptions {
  // kInt8: every linear layer quantized at load from the checkpoint's F32/BF16/F16 weights
  // (the embedding table stays BF16: it is read one row per token, not streamed).
  WeightFormat weights = WeightFormat::kBF16;
  // With kInt8: lm_head INT8 too (else BF16: the logits' own rounding only).
  bool quantize_lm_head = true;
  int num_threads = 2;                   // including the calling thread
  // kAuto: the best instruction set the CPU has; a named one the CPU lacks fails Create.
  KernelPath kernel = KernelPath::kAuto;
  // Tensor parallelism: this rank's group (rank, world size). Null or world size 1: the
  // whole model. Else the checkpoint is opened for this rank's shard (heads, fc1 columns,
  // vocabulary rows) and each step makes one all-reduce per layer, one for the
  // embedding rows and one all-gather of the logits (rows asking for num_candidates
  // travel as top-C candidates, see parallel/vocab_gather.h). Must outlive the runner.
  parallel::Communicator* comm = nullptr;
  // LoRA adapter slots (--max-loras): adapters installed at once with SetAdapter, in
  // [0, kMaxAdapterSlots]; 0: the runner serves the base model only.
  int32_t max_adapter_slots = 0;
};

class CpuModelRunner final : public worker::ModelRunner {
 public:
  // Loads `<model_dir>` (config.json, generation_config.json, safetensors, and the
  // tokenizer's size from tokenizer.json when present).
  static absl::StatusOr<std::unique_ptr<CpuModelRunner>> Create(const std::string& model_dir,
                                                                const CpuRunnerOptions& options = {});
  // From an opened checkpoint; a sharded one needs options.comm of the same rank and size.
  static absl::StatusOr<std::unique_ptr<CpuModelRunner>> Create(const model::PhiCheckpoint& checkpoint,
                                                                const CpuRunnerOptions& options = {});
  ~CpuModelRunner() override;

  const worker::ModelShape& shape() const override { return shape_; }
  absl::Status AllocateKvCache(const worker::KvCacheSpec& spec) override;
  int64_t KvBlockBytes(int32_t block_size) const override;
  absl::Status Step(const worker::StepBatch& batch, worker::StepLogits* out) override;
  int32_t max_adapter_slots() const override { return options_.max_adapter_slots; }
  // Slices `adapter` for this runner's tensor-parallel rank and packs it (cpu_lora.h).
  // FAILED_PRECONDITION without slots; INVALID_ARGUMENT for a slot outside
  // [1, max_adapter_slots] or an adapter that does not fit the model (the slot then keeps
  // what it held).
  absl::Status SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) override;

  static constexpr int32_t kMaxAdapterSlots = 1024;

  const model::PhiConfig& config() const { return config_; }
  const model::GenerationConfig& generation() const { return generation_; }
  // Weight bytes one decode step streams from memory (GEMM weights, all layers + lm_head).
  int64_t weight_bytes_per_step() const;
  // Bytes of every weight held in memory (GEMM panels with padding and INT8 scales, the
  // embedding table, norms and biases).
  int64_t weight_memory_bytes() const;
  // The instruction set every kernel of this runner uses.
  Isa isa() const { return isa_; }
  // "<isa>-fma-<weights>" ("avx2-fma-int8", "avx512-fma-bf16"), "avx512bf16-dpbf16-bf16"
  // (vdpbf16ps) or "portable-<weights>"; with an INT8 body and a BF16 lm_head,
  // "...-int8-bf16head".
  std::string kernel_name() const;
  // Totals of the logits all-gathers (bytes, whole rows, candidate rows); zero without a group.
  const parallel::VocabGatherStats& vocab_gather_stats() const { return vocab_gather_stats_; }

 private:
  struct Layer {
    std::vector<float> ln_w, ln_b;
    PackedMatrix w_in;   // [3H + I, H]: q, k, v, fc1 rows
    std::vector<float> b_in;
    PackedMatrix w_out;  // [H, H + I]: dense | fc2 columns
    std::vector<float> b_out;  // dense.bias + fc2.bias
  };

  // Rows [first, first + count) of a step, the tokens of the sequences of one adapter slot.
  struct AdapterRows {
    int32_t slot = 0;
    int64_t first = 0, count = 0;
  };
  // A step's batch flattened: token t of the step belongs to sequence seq_of[t] at position
  // pos[t]; sequence i's tokens start at row seq_first[i]. Sequences are laid out by adapter
  // slot (stable), so that each adapter's rows are one block: adapter_rows, slots > 0 only.
  struct StepTokens {
    std::vector<int64_t> seq_first;
    std::vector<int32_t> token, pos;
    std::vector<const worker::SequenceStep*> seq_of;
    std::vector<AdapterRows> adapter_rows;
    int64_t count = 0;
  };

  explicit CpuModelRunner(const CpuRunnerOptions& options);
  absl::Status Load(const model::PhiCheckpoint& checkpoint);
  void SetDimensions(const model::PhiCheckpoint& checkpoint);
  absl::Status LoadLayer(const model::PhiCheckpoint& checkpoint, int layer, WeightFormat format,
                         std::vector<uint8_t>* tmp);
  void BuildRopeTables();
  absl::Status Validate(const worker::StepBatch& batch) const;
  static StepTokens Flatten(const worker::StepBatch& batch);
  void Embed(const StepTokens& st);
  absl::Status RunLayer(int layer, const worker::StepBatch& batch, const StepTokens& st,
                        parallel::Communicator* comm);
  absl::Status Logits(const worker::StepBatch& batch, const StepTokens& st, parallel::Communicator* comm,
                      worker::StepLogits* out);
  void Attention(int layer, const worker::StepBatch& batch, const std::vector<int64_t>& seq_first_token);
  float* KeyAt(int layer, int32_t block, int head) const;
  float* ValueAt(int layer, int32_t block, int head) const;

  CpuRunnerOptions options_;
  Isa isa_ = Isa::kPortable;
  model::PhiConfig config_;
  model::GenerationConfig generation_;
  worker::ModelShape shape_;
  int64_t hidden_ = 0, inter_ = 0, heads_ = 0, head_dim_ = 0, rot_half_ = 0;
  int64_t n_in_ = 0, k_out_ = 0;  // 3H + I, H + I  (this rank's shares: 3A + F, A + F)
  // Tensor parallelism: attention width (local heads x head_dim), fc1 columns and
  // vocabulary rows of this rank; equal to H, I and V for a whole model.
  int64_t attn_ = 0, fc1_ = 0, vocab_ = 0, vocab0_ = 0;

  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<MatMul> matmul_;

  std::vector<float> embed_f32_;      // [V, H] in F32 mode
  std::vector<uint16_t> embed_bf16_;  // [V, H] in BF16 mode
  std::vector<Layer> layers_;
  std::vector<float> final_ln_w_, final_ln_b_;
  PackedMatrix lm_head_;
  std::vector<float> lm_head_b_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_pos, rot_half]

  // Paged KV cache: per layer, [num_blocks][heads] of K^T [head_dim][block_size], then the
  // same of V [block_size][head_dim] (attention.h says why K is transposed).
  worker::KvCacheSpec kv_spec_;
  std::unique_ptr<uint8_t[], AlignedFree> kv_;
  int64_t kv_layer_stride_ = 0;  // floats per layer per K (or V)

  // slots_[s]: the adapter in slot s (1..max_adapter_slots; [0] stays null, the base).
  std::vector<std::unique_ptr<PackedLoraAdapter>> slots_;

  // Step buffers, grown on demand.
  std::vector<float> x_, h_, y_in_, z_, scores_;
  std::vector<float> lora_s_;  // LoRA shrink outputs [rows, ranks] of one adapter group
  std::vector<const float*> block_ptrs_;  // per thread: K then V block pointers of one head
  // scores_: per thread, kAttentionQueryTile x max_position_embeddings floats.
  std::vector<float> partial_, logits_local_;  // tensor parallelism: pre-reduce, pre-gather
  parallel::VocabGatherStats vocab_gather_stats_;
};

}  // namespace phi::worker::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_PHI_CPU_RUNNER_H_
