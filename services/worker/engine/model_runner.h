// The engine's only view of a model: one forward step over a batch of sequences.
// Backends (CPU, CUDA, tensor-parallel groups) implement it; the engine knows nothing
// of CUDA or gRPC (docs/architecture.md, "Layering").
#ifndef PHI_SERVICES_WORKER_ENGINE_MODEL_RUNNER_H_
#define PHI_SERVICES_WORKER_ENGINE_MODEL_RUNNER_H_

#include <cstdint>
#include <span>
#include <vector>

#include <memory>

#include "absl/status/status.h"
#include "services/worker/engine/sampler.h"

namespace phi::worker {

namespace lora {
struct LoraAdapter;
}

// What the engine needs to know about the model behind a runner.
struct ModelShape {
  int32_t vocab_size = 0;            // rows of the embedding / lm_head (51200 for Phi-1.5)
  // Ids the tokenizer knows (0: same as vocab_size); tests draw prompts below it. Sampling and
  // logprobs cover all vocab_size rows regardless (sampler.h: the model's own distribution).
  int32_t tokenizer_vocab_size = 0;
  int32_t max_position_embeddings = 0;  // the context length; positions >= it are refused
  int32_t num_hidden_layers = 0;
  int32_t num_attention_heads = 0;
  int32_t head_dim = 0;
};

// Geometry of the paged KV cache. The runner owns the memory (its layout is the
// backend's business); the engine's block manager owns the block ids.
struct KvCacheSpec {
  int32_t num_blocks = 0;  // blocks in the pool, ids 0 .. num_blocks-1
  int32_t block_size = 16; // tokens per block
};

// One sequence's share of a step.
struct SequenceStep {
  uint64_t seq_id = 0;
  // New tokens this step: a prefill chunk or one decode token. Never empty.
  std::span<const int32_t> tokens;
  // Position of tokens[0]; KV for positions [0, start_pos) is already in the cache.
  int32_t start_pos = 0;
  // Block ids covering positions [0, start_pos + tokens.size()), in order.
  std::span<const int32_t> block_table;
  // Logits for every new token (prompt logprobs, echo) instead of only the last.
  bool all_logits = false;
  // > 0 (never with all_logits): the last row only feeds the sampler with `sampling`, no
  // penalties, and needs at most this many candidates (CandidatesNeeded). A runner whose
  // vocabulary is split across ranks may then gather just each rank's top candidates and
  // log-sum-exp and return the row as StepLogits::candidates; 0: the full row.
  int32_t num_candidates = 0;
  SamplingOptions sampling;  // used with num_candidates > 0, to check the candidates suffice
  bool logprobs = false;     // with num_candidates: the candidates must carry the log-sum-exp
  // 0: the base model; 1..max_adapter_slots(): the LoRA adapter installed in that slot
  // (SetAdapter). A batch may mix slots; each sequence's result is the same as alone.
  int32_t adapter_slot = 0;
};

struct StepBatch {
  std::vector<SequenceStep> seqs;
};

// Logits rows: one row per sequence, or tokens.size() rows for a sequence with all_logits,
// found through first_row (batch order unless candidate rows fell back to full rows).
// Row r starts at data[r * vocab_size]. A sequence with num_rows 0 has no row: its last row
// is candidates[i] (only when its SequenceStep asked for num_candidates).
struct StepLogits {
  int32_t vocab_size = 0;
  std::vector<int32_t> first_row;  // first_row[i]: index of sequence i's first row
  std::vector<int32_t> num_rows;   // num_rows[i]: 1, or tokens.size() with all_logits
  std::vector<float> data;         // rows x vocab_size, float32
  std::vector<LogitCandidates> candidates;  // per sequence where num_rows[i] == 0, else empty

  bool HasCandidates(size_t seq_index) const { return num_rows[seq_index] == 0; }

  std::span<const float> Row(int32_t row) const {
    return {data.data() + static_cast<size_t>(row) * vocab_size, static_cast<size_t>(vocab_size)};
  }
  // The logits that predict the token after sequence i's last new token.
  std::span<const float> LastRow(size_t seq_index) const {
    return Row(first_row[seq_index] + num_rows[seq_index] - 1);
  }
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual const ModelShape& shape() const = 0;

  // Allocates the paged KV cache; called once before the first Step.
  virtual absl::Status AllocateKvCache(const KvCacheSpec& spec) = 0;

  // How many KV blocks fit in `memory_bytes` (for sizing the cache from free memory).
  virtual int64_t KvBlockBytes(int32_t block_size) const = 0;

  // Runs the model on every sequence of the batch: writes their K/V into the
  // cache blocks of their tables and fills `out`. Positions past
  // max_position_embeddings are refused with INVALID_ARGUMENT.
  virtual absl::Status Step(const StepBatch& batch, StepLogits* out) = 0;

  // LoRA adapter slots (services/worker/lora): how many adapters this runner holds at once
  // (0: it serves none), and installing one. SetAdapter puts the whole model's `adapter` (the
  // runner takes its tensor-parallel slice) into `slot` in [1, max_adapter_slots()],
  // replacing what was there; null empties the slot. Called between steps, never during one;
  // no sequence of the next Step may name an empty slot (INVALID_ARGUMENT).
  virtual int32_t max_adapter_slots() const { return 0; }
  virtual absl::Status SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) {
    (void)slot;
    (void)adapter;
    return absl::UnimplementedError("this backend serves no LoRA adapters");
  }
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_MODEL_RUNNER_H_
