// The Phi forward pass on one GPU over device-resident BF16 weights and a paged KV cache.
// Free of Abseil (see cuda_status.h) so the benchmark and GPU tests build standalone; the
// ModelRunner adapter (cuda_model_runner.h) loads real weights into it.
//
// One layer is Phi's parallel block, with its two fused projections:
//   h = LN(x);  [q|k|v|f] = h W1^T + b1            (W1 = [q;k;v;fc1], 2048 -> 6144+8192)
//   q,k <- rotary; K,V -> cache; a = Attn(q, cache); g = gelu_new(f)
//   x = x + [a|g] W2^T + b2                          (W2 = [dense | fc2] along K, b2 = sum)
// x is the F32 residual stream; logits are F32.
//
// Tensor parallelism (config tp_world > 1, collectives set): this rank holds num_heads whole
// heads and intermediate_size fc1 columns (its share, already divided), the matching input
// columns of W2, and vocab_size / tp_world rows of the embedding and lm_head. The embedding
// rows of other ranks' ids are zeros and one all-reduce of x assembles them; in each layer
// rank 0 adds its partial [a|g] W2^T + b2 to x while the others write only their partials,
// so one all-reduce of x per layer gives x + Σ partials + b2; the lm_head's vocabulary
// slices are all-gathered into full logit rows, except rows asked as candidates
// (PhiSeqInput::num_candidates), for which each rank's top-candidate record of its slice
// travels instead. ref: docs/architecture.md "Phi-1.5 facts".
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_PHI_CUDA_MODEL_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_PHI_CUDA_MODEL_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "services/worker/backends/cuda/gemm_lt.h"
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/lora_kernels.h"

namespace phi::bench {
struct PhiCudaModelAccess;  // bench/cuda/model_access.h
}  // namespace phi::bench

namespace phi::worker::cuda {

struct PhiCudaConfig {
  int vocab_size = 51200;
  int hidden_size = 2048;
  int intermediate_size = 8192;
  int num_layers = 24;
  int num_heads = 32;
  int head_dim = 64;
  int rotary_dim = 32;
  int max_positions = 2048;
  float layer_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  // Tensor-parallel rank and group size. num_heads and intermediate_size above are this
  // rank's share; vocab_size is the whole vocabulary, split into tp_world equal slices.
  int tp_rank = 0;
  int tp_world = 1;

  int local_vocab() const { return vocab_size / tp_world; }
  int vocab_begin() const { return tp_rank * local_vocab(); }

  int qkv_width() const { return 3 * num_heads * head_dim; }
  // Fused q|k|v|fc1 rows and [dense | fc2] columns, each rounded up to a multiple of 8 with
  // zero weights: they are the BF16 leading dimensions of qkvf_ and mid_, which prefill
  // attention (q_stride), the gemv and cuBLASLt need 16-byte aligned. Phi-1.5 needs no
  // padding; an intermediate size such as 333 would otherwise be refused at the first step.
  int w1_rows() const { return RoundUp8(qkv_width() + intermediate_size); }
  int w2_cols() const { return RoundUp8(num_heads * head_dim + intermediate_size); }
  static int RoundUp8(int n) { return (n + 7) / 8 * 8; }
  int64_t ParameterCount() const;
};

// Device pointers into the weight arena.
struct PhiCudaLayer {
  bf16* ln_w = nullptr;
  bf16* ln_b = nullptr;
  bf16* w1 = nullptr;  // [w1_rows, hidden]
  bf16* b1 = nullptr;  // [w1_rows]
  bf16* w2 = nullptr;  // [hidden, w2_cols]
  float* b2 = nullptr; // [hidden] dense.bias + fc2.bias
};
struct PhiCudaWeights {
  bf16* embed = nullptr;  // [local_vocab, hidden]
  std::vector<PhiCudaLayer> layers;
  bf16* final_ln_w = nullptr;
  bf16* final_ln_b = nullptr;
  bf16* lm_w = nullptr;   // [local_vocab, hidden]
  float* lm_b = nullptr;  // [local_vocab]
};

// The collectives a tensor-parallel rank needs, on device buffers, enqueued on the model's
// stream after the work already there (an implementation may also complete them before it
// returns). Forward calls Synchronize once per step before it reads results on the host: a
// bounded wait, where a plain cudaStreamSynchronize would hang forever on a dead peer. The
// ModelRunner adapts parallel::Communicator (NCCL) to this; the kernel library stays free of
// Abseil and NCCL.
class PhiCudaCollectives {
 public:
  virtual ~PhiCudaCollectives() = default;
  // data[i] = Σ over ranks of data[i], in place.
  virtual CudaStatus AllReduceSum(float* data, size_t count, cudaStream_t stream) = 0;
  // out = the ranks' `in` one after another (rank-major); out does not overlap in.
  virtual CudaStatus AllGather(const void* in, void* out, size_t bytes_per_rank,
                               cudaStream_t stream) = 0;
  // Returns once everything enqueued on `stream` has finished, or fails within the group's
  // timeout (then the communicator is broken).
  virtual CudaStatus Synchronize(cudaStream_t stream) = 0;
};

struct PhiCudaOptions {
  int max_tokens_per_step = 2048;  // prefill chunk + decode tokens of one step
  int max_seqs = 256;
  int max_logit_rows = 2048;       // rows of logits one step may produce
  int block_size = 16;             // default for AllocateKvCache
  bool use_cuda_graphs = true;     // decode steps replay a graph per batch-size bucket
  // KV cache elements: BF16 (default: the exact path) or FP8 E4M3, which halves the bytes
  // each decode step reads and doubles the blocks that fit (kv_block_bytes_for follows).
  KvCacheDtype kv_dtype = KvCacheDtype::kBf16;
  // FP8 only, per tensor, K and V alike: stored = saturate_e4m3(value / kv_scale), read =
  // code * kv_scale. 1.0 is safe for Phi-1.5-sized activations: E4M3 spans 2^-6 (normal) ..
  // 448 with 3 mantissa bits at every magnitude, K and V of a LayerNorm-ed 2048-wide input
  // stay within single or low double digits, far below the 448 saturation, and values under
  // 2^-6 (subnormal steps of 2^-9) are small next to the dot products they join.
  // Calibrated per-layer K and V scales (vLLM's k_scale / v_scale) are a follow-up.
  float kv_scale = 1.0f;
  // Decode attention blocks per (sequence, head) (PagedAttentionArgs::decode_partitions): 0
  // one per partition of max_positions (decode graphs), -1 chosen from the batch, N at most
  // N. Bit-identical results either way; -1 avoids the blocks that find nothing to do past
  // the real lengths in a graph captured for max_positions (phi_cuda_bench
  // --decode-partitions compares them).
  int decode_partitions = 0;
  // Decode of 1..8 sequences (kGemvMaxM) runs each layer as 3 kernels instead of 6: LayerNorm
  // fused into the W1 GEMV, rotary and the KV write into decode attention, gelu into the W2
  // GEMV (decode_gemv_forward; 2..8 tokens on tensor cores); the final LayerNorm into the lm_head
  // GEMV. Bit-identical to the unfused kernels with the same GEMV (at batch 1 always; at
  // 2..8 with gemv_max_m = 8, else the unfused GEMMs are cuBLASLt's).
  bool fuse_decode = true;
  // GEMMs with at most this many rows run the decode GEMV (gemv_forward) instead of
  // cuBLASLt (GemmLt::set_small_m_max), 0..8. Default 1: the one-token GEMV beats cuBLASLt;
  // phi_cuda_bench's "gemv M=8" rows compare the tensor-core form for 2..8 rows with it.
  int gemv_max_m = 1;
  // Decode steps' kernels launch as programmatic dependents (pdl.cuh) of the kernel before
  // them (Hopper), so launch latency overlaps the previous kernel; in the fused batch-1 path
  // each GEMV's first weight loads do too, and the W2 GEMV streams its fc1 columns while
  // rotary and attention run. Not with tensor parallelism. Turned off for the model if a
  // launch with it fails. Same bits either way.
  bool programmatic_launch = true;
  // Prefill attention on tensor cores (attention_prefill_mma.cu); false: the FP32-FMA kernel.
  bool tensor_core_prefill = true;
  // Top-candidate selection splits each row into this many vocabulary slices, one block
  // each (TopCandidatesArgs::slices), joined on the host (JoinCandidateSlices): 0 chooses
  // from the step (top_candidates_slices: at batch 1, 25 slices of a 51200 row instead of
  // one block reading it all; 1 under tensor parallelism, where every rank must choose
  // alike), N asks for N (at most what the candidate area holds: max_seqs records of
  // kMaxTopCandidates entries). Same candidates either way.
  int candidate_slices = 0;
  // LoRA adapters held at once (SetAdapter's slots 1..max_adapter_slots; the worker's
  // --max-loras), 0: none. Steps whose sequences name a slot take the unfused, graph-free
  // path with the adapters' shrink/expand kernels (lora_kernels.h) as steps of each layer;
  // steps of the base alone run exactly as without adapters.
  int max_adapter_slots = 0;
  // The largest rank SetAdapter takes (the worker's --max-lora-rank), 1..kLoraMaxRank: it
  // sizes the shrink's output, max_tokens_per_step x max_adapter_rank F32.
  int max_adapter_rank = 64;
};

// The linear layers of a Phi layer that an adapter may adapt, in lora::LoraModule's order
// (services/worker/lora/lora_adapter.h).
enum class LoraTarget : int { kQ = 0, kK, kV, kDense, kFc1, kFc2 };
inline constexpr int kLoraTargets = 6;

// One adapted linear layer as SetAdapter takes it: host F32 in lora::LoraWeights' layout,
// this rank's slice (in -> out: q/k/v hidden -> heads x head_dim, dense heads x head_dim ->
// hidden, fc1 hidden -> intermediate, fc2 intermediate -> hidden, with this rank's heads and
// intermediate share). delta(x) = scaling * B (A x).
struct PhiCudaLoraWeights {
  int rank = 0;  // 0: the adapter leaves this layer alone
  float scaling = 0.0f;
  std::span<const float> a;  // [rank, in]
  std::span<const float> b;  // [out, rank]
};
struct PhiCudaAdapter {
  std::vector<std::array<PhiCudaLoraWeights, kLoraTargets>> layers;  // [num_layers]
};

// One sequence's share of a step (host memory; see ModelRunner's SequenceStep).
struct PhiSeqInput {
  std::span<const int32_t> tokens;
  int start_pos = 0;
  std::span<const int32_t> block_table;
  bool all_logits = false;
  // 1 .. kMaxTopCandidates (never with all_logits): also select this
  // row's top num_candidates on the GPU (top_candidates_forward), with the log-sum-exp when
  // candidate_lse, so that only the record needs to leave the device. 0: no record.
  int num_candidates = 0;
  bool candidate_lse = false;
  // 0: the base model; 1..max_adapter_slots: the adapter SetAdapter put in that slot.
  int adapter_slot = 0;
};

struct PhiStepOutput {
  std::vector<int32_t> first_row, num_rows;  // per sequence, into the logits rows
  int total_rows = 0;
  // With num_candidates asked for: candidate_record[i] is sequence i's record index (-1: none)
  // in candidate_records: candidate_ranks x candidate_slices blocks of the step's records
  // (rank order, one rank per vocabulary share — 1 when the records were taken from whole
  // rows —, each rank's share in candidate_slices slices, TopCandidatesArgs::slices), each
  // record CandidateRecordBytes(candidate_stride) bytes.
  std::vector<int32_t> candidate_record;
  std::vector<char> candidate_records;
  int candidate_stride = 0;
  int candidate_ranks = 1;
  int candidate_slices = 1;
  // logits_row[r]: where step row r (first_row / num_rows numbering) sits in the device logits
  // that CopyLogits reads, -1 when it was not assembled (a tensor-parallel candidate row:
  // GatherLogitRows brings it when the candidates do not cover it). assembled_rows: rows
  // there.
  std::vector<int32_t> logits_row;
  int assembled_rows = 0;
};

class PhiCudaModel {
 public:
  static CudaStatus Create(const PhiCudaConfig& config, const PhiCudaOptions& options,
                           std::unique_ptr<PhiCudaModel>* out);
  ~PhiCudaModel();
  PhiCudaModel(const PhiCudaModel&) = delete;
  PhiCudaModel& operator=(const PhiCudaModel&) = delete;

  const PhiCudaConfig& config() const { return config_; }
  const PhiCudaOptions& options() const { return options_; }
  const PhiCudaWeights& weights() const { return weights_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  int kv_num_blocks() const { return kv_num_blocks_; }
  cudaStream_t stream() const { return stream_; }

  // Tensor parallelism: the group's collectives (not owned), set once before the first
  // Forward (the communicator is usually made for stream(), which exists only after Create).
  // Required when tp_world > 1; with tp_world == 1 the sharded code path runs as a group of
  // one (tests). Decode steps are then not captured in CUDA graphs (not yet: NCCL kernels
  // can be captured, the follow-up).
  CudaStatus SetCollectives(PhiCudaCollectives* collectives);

  // Allocates num_blocks KV blocks of block_size positions (0: options().block_size), plus
  // one scratch block that padded graph rows write to.
  CudaStatus AllocateKvCache(int num_blocks, int block_size = 0);
  // Bytes of one KV block of `block_size` positions over all layers (K and V).
  int64_t kv_block_bytes_for(int block_size) const;

  // LoRA adapter slots (phi_cuda_lora.cc). SetAdapter copies `adapter` (this rank's slice,
  // ranks <= max_adapter_rank, every matrix the size its layer needs) to the device as BF16
  // into `slot` in [1, max_adapter_slots], replacing what was there; null empties the slot.
  // Between steps only. Refused (kInvalidArgument) with the slot, layer and matrix at fault;
  // kResourceExhausted when the matrices do not fit in the GPU memory left (the slot keeps
  // what it held).
  int max_adapter_slots() const { return options_.max_adapter_slots; }
  CudaStatus SetAdapter(int slot, const PhiCudaAdapter* adapter);

  // Runs one step. Logits of every produced row stay on the device (CopyLogits reads them);
  // sequences with num_candidates get their top-candidate records in `out` (one
  // device-to-host copy of the records). Refuses (kInvalidArgument) bad ids, positions past
  // max_positions, short block tables and batches over the options' capacities.
  CudaStatus Forward(std::span<const PhiSeqInput> seqs, PhiStepOutput* out);
  CudaStatus CopyLogits(int first_row, int num_rows, float* host) const;
  // Tensor parallelism, after a Forward that left candidate rows unassembled: all-gathers the
  // vocabulary slices of those step rows and lays them out as device logits rows dst_row,
  // dst_row + 1, ... (dst_row >= the step's assembled_rows). Collective: every rank calls it
  // with the same rows (they reach the same verdict from the same gathered records).
  CudaStatus GatherLogitRows(std::span<const int32_t> step_rows, int dst_row);

  int num_captured_graphs() const { return static_cast<int>(graphs_.size()); }
  // Whether decode steps launch with programmatic dependent launch (options, and no launch
  // with it has failed).
  bool programmatic_launch_active() const { return options_.programmatic_launch; }

 private:
  // The benchmark times decode graphs alone and reports cuBLASLt's fallback.
  friend struct ::phi::bench::PhiCudaModelAccess;
  struct Layout;  // offsets of the step metadata in the device buffer
  // Tensor-parallel candidate step: a run of consecutive whole (non-candidate) step rows.
  struct Run {
    int first = 0, rows = 0;  // step rows
  };
  // What Forward decided for a step from its sequences, before packing.
  struct StepPlan {
    int n_seq_real = 0;              // the batch's sequences
    int n_seq = 0, n_tok = 0, n_rows = 0;  // with a decode graph's padding rows
    bool decode = false;             // every sequence one token and one logits row
    bool graph = false;              // a decode step replayed (or captured) as a CUDA graph
    bool tp_candidates = false;      // GatherCandidateStep instead of whole-row gathers
  };
  // What packing the metadata found: the candidate rows and the runs of whole rows.
  struct StepPack {
    std::vector<Run> whole_runs;
    int whole_rows = 0;
    int n_cand = 0;
    int max_ctx = 1;  // longest context of the step
  };
  // The kernels one layer runs, decided once per pass.
  enum class LayerPath {
    kFusedDecode,     // 1..8 decode tokens, one GPU, 3 kernels a layer (FusedDecode)
    kSingleGpu,       // one GPU, unfused kernels (prefill, mixed, larger decode batches)
    kTensorParallel,  // a rank of a group: partial W2 products summed by an all-reduce
  };
  // One run of the forward pass (RunBody).
  struct Pass {
    const Layout* layout = nullptr;
    LayerPath path = LayerPath::kSingleGpu;
    bool decode = false;   // decode attention (else prefill tiles)
    bool pdl = false;      // programmatic dependent launch
    int max_context_len = 0;
    bool gather_logits = true;
  };

  PhiCudaModel(const PhiCudaConfig& config, const PhiCudaOptions& options)
      : config_(config), options_(options) {}
  CudaStatus Init();
  CudaStatus AllocateWeights();
  CudaStatus AllocateActivations();

  // Forward's steps, in the order it runs them.
  CudaStatus CheckStep(std::span<const PhiSeqInput> seqs) const;
  CudaStatus CheckSequence(int i, const PhiSeqInput& s) const;
  StepPlan PlanStep(std::span<const PhiSeqInput> seqs) const;
  Layout PackStep(std::span<const PhiSeqInput> seqs, const StepPlan& plan, StepPack* pack,
                  PhiStepOutput* out);
  static void ResetStepOutput(int n_seq, PhiStepOutput* out);
  int PackSequence(const Layout& layout, int i, const PhiSeqInput* s, int n, int tok, int row);
  void RecordRows(const Layout& layout, int i, const PhiSeqInput& s, int row, int rows,
                  StepPack* pack, PhiStepOutput* out);
  CudaStatus ReplayDecodeGraph(const Layout& layout);
  CudaStatus SelectCandidates(const Layout& layout, int n_cand, const PhiStepOutput& out,
                              size_t cand_bytes);
  CudaStatus WaitForStep();
  int32_t* MetaHost(size_t offset);
  const int32_t* Meta(size_t offset) const;

  // The forward pass up to the logits (what a decode graph holds). gather_logits false
  // (tensor parallelism only): the lm_head's local slices stay in logits_local_ for the
  // caller to gather.
  CudaStatus RunBody(const Layout& layout, bool decode, int max_context_len, bool gather_logits = true);
  // RunBody, retried once without programmatic launch when a launch with it failed (a GPU or
  // driver without it); a failing capture is ended before the retry.
  CudaStatus RunBodyOrFallBack(const Layout& layout, bool decode, int max_context_len,
                               bool gather_logits = true);
  // RunBody's steps (phi_cuda_forward.cc).
  Pass PlanPass(const Layout& layout, bool decode, int max_context_len, bool gather_logits) const;
  CudaStatus Embed(const Pass& p);
  CudaStatus FusedDecodeLayer(const Pass& p, int li);
  CudaStatus SingleGpuLayer(const Pass& p, int li);
  CudaStatus TensorParallelLayer(const Pass& p, int li);
  CudaStatus W2Input(const Pass& p, int li);
  CudaStatus SingleGpuW2(const Pass& p, int li);
  // LoRA steps of a layer (phi_cuda_lora.cc), nothing in a step without adapters: q/k/v/fc1
  // deltas into qkvf_ after the W1 GEMM (before rotary and gelu read them), dense/fc2 deltas
  // into x_ after the W2 product (before the layer's all-reduce).
  CudaStatus LoraW1(const Pass& p, int li);
  CudaStatus LoraW2(const Pass& p, int li);
  CudaStatus LoraLinear(const Pass& p, int li, LoraTarget t, const bf16* x, int x_stride,
                        void* y, bool y_f32, int y_stride);
  // The step's segments of consecutive tokens that share an adapter slot (base ones left out).
  static std::vector<LoraSegment> LoraSegmentsOf(std::span<const PhiSeqInput> seqs);
  // The segments into the step metadata (and their longest count into the layout).
  void PackLoraSegments(std::span<const LoraSegment> segments, Layout* layout);
  // in / out features of target t on this rank.
  std::array<int, 2> LoraShape(LoraTarget t) const;
  CudaStatus CheckAdapter(const PhiCudaAdapter& adapter) const;
  // Frees SetAdapter's new allocation when it fails before installing it.
  struct DeviceFree {
    void operator()(char* p) const { cudaFree(p); }
  };
  CudaStatus UploadAdapter(int slot, const PhiCudaAdapter& adapter,
                           std::unique_ptr<char, DeviceFree>* arena,
                           std::vector<LoraSlotWeights>* entries) const;
  CudaStatus AllocateAdapterTable();
  size_t LoraTableIndex(int li, LoraTarget t, int slot) const;
  CudaStatus LayerNormW1(const Pass& p, const PhiCudaLayer& w);
  CudaStatus RotaryKv(const Pass& p, int li);
  CudaStatus Attention(const Pass& p, int li);
  CudaStatus Gelu(const Pass& p);
  DecodeGemvArgs GemvBase(const Pass& p) const;
  DecodeGemvArgs W2GemvArgs(const Pass& p, const PhiCudaLayer& w) const;
  CudaStatus FusedDecodeHead(const Pass& p);
  CudaStatus FinalLayerNorm(const Pass& p);
  CudaStatus SingleGpuHead(const Pass& p);
  CudaStatus TensorParallelHead(const Pass& p);
  size_t LayerCacheBytes() const;
  char* KCache(int li) const;
  char* VCache(int li) const;
  // Captures RunBody of a decode step (largest context) into an instantiated graph.
  CudaStatus CaptureDecodeGraph(const Layout& layout, cudaGraphExec_t* exec);
  // Whether this step runs the fused one-token decode path (PhiCudaOptions::fuse_decode).
  bool FusedDecode(const Layout& layout, bool decode) const;
  // Tensor-parallel candidate step: whole rows' slices and this rank's candidate records in
  // one all-gather; whole rows assembled first in logits_, records copied to cand_host_.
  CudaStatus GatherCandidateStep(const Layout& layout, std::span<const Run> whole_runs, int whole_rows,
                                 int n_cand, int stride, int slices, PhiStepOutput* out);
  // Vocabulary slices per candidate row for a step with n_cand rows selected with `stride`
  // entries (PhiCudaOptions::candidate_slices); the records fit the candidate areas.
  int CandidateSlices(int n_cand, int stride) const;

  PhiCudaConfig config_;
  PhiCudaOptions options_;
  PhiCudaCollectives* collectives_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<GemmLt> gemm_;
  void* weight_arena_ = nullptr;
  int64_t weight_bytes_ = 0;
  PhiCudaWeights weights_;
  char* kv_arena_ = nullptr;  // untyped: elements of options_.kv_dtype
  int kv_num_blocks_ = 0;  // usable blocks; block kv_num_blocks_ is the scratch block
  int max_blocks_per_seq_ = 0;

  // Activations, sized for the options' capacities.
  float* x_ = nullptr;
  bf16* h_ = nullptr;
  bf16* qkvf_ = nullptr;
  bf16* mid_ = nullptr;
  bf16* hf_ = nullptr;
  float* logits_ = nullptr;         // [max_logit_rows, vocab_size]
  float* logits_local_ = nullptr;   // with collectives: [max_logit_rows, local_vocab]
  // with collectives: [tp_world, max_logit_rows, local_vocab] plus tp_world record areas
  float* logits_gather_ = nullptr;
  char* tp_send_ = nullptr;         // with collectives: a rank's share of a candidate step
  float* attn_ws_ = nullptr;
  unsigned int* attn_counters_ = nullptr;
  // Step metadata: a pinned host staging buffer and its device twin, one copy per step.
  char* meta_host_ = nullptr;
  char* meta_dev_ = nullptr;
  size_t meta_bytes_ = 0;
  // Top-candidate records (device) and their pinned host mirror: max_seqs records of
  // kMaxTopCandidates entries.
  char* cand_dev_ = nullptr;
  char* cand_host_ = nullptr;

  std::map<int, cudaGraphExec_t> graphs_;  // decode graphs by padded batch size

  // LoRA (phi_cuda_lora.cc): per slot one device allocation of its BF16 matrices; the slot
  // table [layer][target][slot] of LoraSlotWeights on the device, and its host mirror; which
  // (layer, target) some slot adapts; the shrink's output U.
  std::vector<void*> adapter_arenas_;  // [max_adapter_slots + 1], entry 0 unused
  std::vector<char> adapter_held_;     // likewise: SetAdapter put an adapter there
  std::vector<LoraSlotWeights> lora_table_host_;
  LoraSlotWeights* lora_table_ = nullptr;
  std::vector<char> lora_adapted_;  // [layer * kLoraTargets + target]: 0 or 1
  float* lora_u_ = nullptr;         // [max_tokens_per_step, max_adapter_rank]
};

// The decode batch sizes that get their own CUDA graph; a batch runs in the smallest bucket
// that holds it, padded with rows that write only the scratch KV block.
int decode_graph_bucket(int batch);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_PHI_CUDA_MODEL_H_
