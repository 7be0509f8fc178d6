// Token sampling from one row of logits: penalties, greedy or temperature with top-k, top-p
// and min-p truncation, a per-request counter-based RNG, and logprobs.
//
// Order (vLLM's and the CUDA sampler's): repetition penalty (transformers), then presence and
// frequency penalties (OpenAI), then temperature, then the truncation filters as thresholds on
// the temperature-scaled logits z (top-k, top-p over the top-k survivors, min-p), then one
// uniform draw walked through the kept tokens in id order. Ties at a threshold are kept.
// Ids >= vocab_limit (past the tokenizer's vocabulary) are never chosen.
#ifndef PHI_SERVICES_WORKER_ENGINE_SAMPLER_H_
#define PHI_SERVICES_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace phi::worker {

struct SamplingOptions {
  float temperature = 0.0f;         // 0: greedy (argmax, lowest id on ties)
  float top_p = 1.0f;               // (0, 1]; 1: off
  int32_t top_k = 0;                // 0: off
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.0f; }
  bool has_penalties() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
};

// The token history the penalties look at: transformers' repetition penalty counts every
// token of the prompt and the output; OpenAI's presence/frequency penalties only the output.
class PenaltyHistory {
 public:
  void AddPrompt(std::span<const int32_t> tokens) { seen_.insert(tokens.begin(), tokens.end()); }
  void AddOutput(int32_t token) {
    seen_.insert(token);
    ++output_counts_[token];
  }
  const std::unordered_set<int32_t>& seen() const { return seen_; }
  const std::unordered_map<int32_t, int32_t>& output_counts() const { return output_counts_; }

 private:
  std::unordered_set<int32_t> seen_;
  std::unordered_map<int32_t, int32_t> output_counts_;
};

struct TokenLogprobValue {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token_id = 0;
  // log-softmax of the raw logits (before penalties, temperature and truncation) over
  // [0, vocab_limit), at token_id.
  float logprob = 0.0f;
  // The `top_n` most likely ids under the same distribution, most likely first.
  std::vector<TokenLogprobValue> top;
};

// Samples one token. `step` is the index of the token being generated within its request
// (0 for the first), the RNG counter. `history` may be null when no penalty is set.
// Without `with_logprobs`, logprob and top are left empty (they cost a pass over the row).
SampleResult SampleToken(std::span<const float> logits, int32_t vocab_limit,
                         const SamplingOptions& options, uint64_t step,
                         const PenaltyHistory* history, bool with_logprobs, int32_t top_n);

// Logprob of `token_id` and the top `top_n` alternatives under log-softmax of the raw logits
// over [0, vocab_limit) (prompt logprobs).
SampleResult ScoreToken(std::span<const float> logits, int32_t vocab_limit, int32_t token_id,
                        int32_t top_n);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_SAMPLER_H_
