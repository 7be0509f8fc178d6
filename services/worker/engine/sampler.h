// Token sampling from one row of logits: penalties, greedy or temperature with top-k, top-p
// and min-p truncation, a per-request counter-based RNG, and logprobs.
//
// Order (vLLM's and the CUDA sampler's): the request's LogitAdjust (logit_bias, the
// min_new_tokens ban, the grammar mask; below), then repetition penalty (transformers), then presence and
// frequency penalties (OpenAI), then temperature, then the truncation filters as thresholds on
// the temperature-scaled logits z (top-k, top-p over the top-k survivors, min-p), then one
// uniform draw walked through the kept tokens in id order. Ties at a threshold are kept.
//
// The distribution is the model's own, over every output row, as transformers computes it:
// logprobs are log_softmax(logits, -1), greedy is argmax(logits) and temperature sampling
// draws from softmax(logits / T) over all rows. `vocab_limit` is the number of the model's
// output rows (ModelShape::vocab_size: 51,200 for Phi-1.5), not the tokenizer's size (50,295):
// an id past the tokenizer (a padding row) takes part in the log-sum-exp, can be among the top
// logprobs and can be chosen (HF's greedy picks it too when its logit is the largest; its
// text is empty). Only columns at or past vocab_limit, which are not rows of the model (a
// longer span, the padding of a vocabulary slice), are left out.
#ifndef PHI_SERVICES_WORKER_ENGINE_SAMPLER_H_
#define PHI_SERVICES_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <limits>
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

// A bias added to one id's raw logit before sampling (OpenAI logit_bias).
struct TokenBias {
  int32_t token_id = 0;
  float bias = 0.0f;
};

// Changes to one row that the request asks for, applied to the raw logits before penalties,
// temperature and truncation, in this order: `bias` is added (logit_bias), the
// `banned` ids become -inf (min_new_tokens: eos and stop ids), then every id the `allowed`
// bitmask leaves out becomes -inf (constrained decoding; words as in token_constraint.h,
// TokenMaskWords(vocab_limit) of them; empty: no mask). When the ban would leave no id the
// mask allows (a complete grammar allows only eos), the ban yields: the grammar wins.
// Greedy then is the argmax over the ids left, and sampling draws only among them. Logprobs
// and top logprobs stay the model's own (log_softmax of the raw row), as without adjustments.
// The spans are views; the caller keeps them alive during the call.
struct LogitAdjust {
  std::span<const TokenBias> bias;
  std::span<const int32_t> banned;
  std::span<const uint32_t> allowed;

  bool active() const { return !bias.empty() || !banned.empty() || !allowed.empty(); }
};

struct TokenLogprobValue {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token_id = 0;
  // log-softmax of the raw logits (before penalties, temperature and truncation) over all
  // rows [0, vocab_limit), at token_id: transformers' log_softmax(logits, -1)[token_id].
  float logprob = 0.0f;
  // The `top_n` most likely ids under the same distribution, most likely first.
  std::vector<TokenLogprobValue> top;
};

// Samples one token. `step` is the index of the token being generated within its request
// (0 for the first), the RNG counter. `history` may be null when no penalty is set.
// Without `with_logprobs`, logprob and top are left empty (they cost a pass over the row).
// Without an active `adjust` the row is read in place (penalties aside); greedy with an
// adjustment and no penalty is a masked argmax over the row in place too; otherwise the
// adjusted row is built once and scaled by the temperature in place.
SampleResult SampleToken(std::span<const float> logits, int32_t vocab_limit,
                         const SamplingOptions& options, uint64_t step,
                         const PenaltyHistory* history, bool with_logprobs, int32_t top_n,
                         const LogitAdjust& adjust = {});

// A compact stand-in for one logits row, for a runner whose vocabulary is split across ranks:
// the most likely ids of the raw logits over all rows [0, vocab_limit) and the whole row's
// log-sum-exp (padding rows included, so that logprobs are transformers'), so
// that only these travel instead of the whole row. Built by MergeCandidates below.
struct LogitCandidates {
  std::vector<int32_t> ids;    // ordered by value descending, then id ascending
  std::vector<float> values;   // the raw logits of ids
  // The first `exact` entries are the row's true top `exact` in that order (every rank
  // contributed at least that many, or the whole row is present).
  int32_t exact = 0;
  // Every id < vocab_limit missing from `ids` has a logit <= bound (-inf: none is missing).
  float bound = -std::numeric_limits<float>::infinity();
  double log_sum_exp = 0.0;  // log(sum(exp(logit))) over every row [0, vocab_limit)
};

// How many candidates a row needs so that SampleFromCandidates can give SampleToken's result,
// or 0 when the sampler needs the whole row: penalties (they read the history), an active
// `adjust` (bias, ban or mask can raise any id), pure temperature or top-p without a
// covering top-k, or more than `max_candidates`. min-p alone asks for `max_candidates` and
// relies on the coverage check.
int32_t CandidatesNeeded(const SamplingOptions& options, int32_t vocab_limit, bool with_logprobs, int32_t top_n,
                         int32_t max_candidates, const LogitAdjust& adjust = {});

// Whether `c` holds every id SampleToken could keep for `options` (and the top `top_n`):
// when false the caller must fetch the whole row. Ties at the cut count as not covered.
bool CandidatesCover(const LogitCandidates& c, const SamplingOptions& options, int32_t top_n);

// SampleToken's result computed from candidates alone; requires CandidatesCover (and no
// penalties). Same arithmetic in the same order over the kept ids: the same token, logprobs
// equal within rounding of the log-sum-exp.
SampleResult SampleFromCandidates(const LogitCandidates& c, const SamplingOptions& options, uint64_t step,
                                  bool with_logprobs, int32_t top_n);

// One rank's share of a candidate row: its top `count` (value desc, id asc) of
// logits[0 .. width) whose ids (id0 + j) are below vocab_limit, whether it left some out, and
// with `log_sum_exp` the log-sum-exp over those (a pass of exp; only logprobs need it).
struct CandidateShard {
  std::vector<int32_t> ids;
  std::vector<float> values;
  bool truncated = false;
  double log_sum_exp = -std::numeric_limits<double>::infinity();
};
CandidateShard SelectCandidates(std::span<const float> logits, int32_t id0, int32_t vocab_limit, int32_t count,
                                bool log_sum_exp = true);

// The row's candidates from every rank's shard (each selected with the same `count`).
LogitCandidates MergeCandidates(std::span<const CandidateShard> shards, int32_t count);

// The shard SelectCandidates gives over adjacent column slices taken together, from each
// slice's shard (selected with the same `count`): the same ids, values and truncated flag,
// the log-sum-exp within rounding. (A GPU selects a row in slices, one block each, to spread a
// few rows over its SMs.)
CandidateShard JoinCandidateSlices(std::span<const CandidateShard> slices, int32_t count);

// Logprob of `token_id` and the top `top_n` alternatives under log-softmax of the raw logits
// over all rows [0, vocab_limit) (prompt logprobs; transformers' log_softmax(logits, -1)).
SampleResult ScoreToken(std::span<const float> logits, int32_t vocab_limit, int32_t token_id,
                        int32_t top_n);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_SAMPLER_H_
