#include "services/worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "services/worker/engine/philox.h"

namespace phi::worker {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// log(sum(exp(l))) over the row, in double so that 51,200 terms lose nothing.
double LogSumExp(std::span<const float> l) {
  float max = kNegInf;
  for (float v : l) max = std::max(max, v);
  double sum = 0.0;
  for (float v : l) sum += std::exp(static_cast<double>(v) - max);
  return max + std::log(sum);
}

int32_t ArgMax(std::span<const float> l) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(l.size()); ++i) {
    if (l[i] > l[best]) best = i;  // strict: the lowest id wins ties
  }
  return best;
}

std::vector<TokenLogprobValue> TopN(std::span<const float> l, double lse, int32_t top_n) {
  const int32_t n = static_cast<int32_t>(l.size());
  const int32_t k = std::min(top_n, n);
  std::vector<TokenLogprobValue> top;
  if (k <= 0) return top;
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = i;
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
  });
  top.reserve(k);
  for (int32_t j = 0; j < k; ++j) {
    top.push_back({ids[j], static_cast<float>(l[ids[j]] - lse)});
  }
  return top;
}

// transformers' RepetitionPenaltyLogitsProcessor: score < 0 ? score * p : score / p, once per
// distinct token of prompt and output; then OpenAI's
// logit -= frequency_penalty * count + presence_penalty * (count > 0) over the output.
void ApplyPenalties(const SamplingOptions& o, const PenaltyHistory& history, std::vector<float>* l) {
  const int32_t n = static_cast<int32_t>(l->size());
  if (o.repetition_penalty != 1.0f) {
    for (int32_t t : history.seen()) {
      if (t < 0 || t >= n) continue;
      float& v = (*l)[t];
      v = v < 0 ? v * o.repetition_penalty : v / o.repetition_penalty;
    }
  }
  if (o.presence_penalty != 0.0f || o.frequency_penalty != 0.0f) {
    for (const auto& [t, count] : history.output_counts()) {
      if (t < 0 || t >= n) continue;
      (*l)[t] -= o.frequency_penalty * static_cast<float>(count) + o.presence_penalty;
    }
  }
}

}  // namespace

SampleResult SampleToken(std::span<const float> logits, int32_t vocab_limit,
                         const SamplingOptions& options, uint64_t step,
                         const PenaltyHistory* history, bool with_logprobs, int32_t top_n) {
  const int32_t n = std::min<int32_t>(static_cast<int32_t>(logits.size()),
                                      vocab_limit > 0 ? vocab_limit : static_cast<int32_t>(logits.size()));
  const std::span<const float> raw = logits.first(n);

  std::vector<float> adjusted;
  std::span<const float> l = raw;
  if (history != nullptr && options.has_penalties()) {
    adjusted.assign(raw.begin(), raw.end());
    ApplyPenalties(options, *history, &adjusted);
    l = adjusted;
  }

  int32_t token = ArgMax(l);
  if (!options.greedy()) {
    const float inv_t = 1.0f / options.temperature;
    std::vector<float> z(n);
    for (int32_t i = 0; i < n; ++i) z[i] = l[i] * inv_t;
    const float zmax = z[token];

    float threshold = kNegInf;
    std::vector<float> kept;  // survivors of top-k, sorted descending (only when top-p needs it)
    if (options.top_k > 0 && options.top_k < n) {
      std::vector<float> tmp(z);
      std::nth_element(tmp.begin(), tmp.begin() + (options.top_k - 1), tmp.end(), std::greater<float>());
      threshold = tmp[options.top_k - 1];
    }
    if (options.top_p < 1.0f) {
      double mass = 0.0;
      for (float v : z) {
        if (v >= threshold) mass += std::exp(static_cast<double>(v) - zmax);
      }
      const double target = static_cast<double>(options.top_p) * mass;
      // The nucleus lies inside any set {z >= c} whose mass reaches the target, so only that
      // set needs sorting: try c = zmax - 8, -16, ... (a peaked distribution keeps a handful of
      // its 51,200 candidates; a flat one ends with all of them, as a plain sort would).
      for (float drop = 8.0f;; drop *= 2.0f) {
        const float c = std::max(threshold, zmax - drop);
        kept.clear();
        double kept_mass = 0.0;
        for (float v : z) {
          if (v >= c) {
            kept.push_back(v);
            kept_mass += std::exp(static_cast<double>(v) - zmax);
          }
        }
        if (kept_mass >= target || c == threshold || !std::isfinite(drop)) break;
      }
      std::sort(kept.begin(), kept.end(), std::greater<float>());
      double cum = 0.0;
      bool reached = false;
      for (float v : kept) {
        cum += std::exp(static_cast<double>(v) - zmax);
        if (cum >= target) {
          threshold = std::max(threshold, v);
          reached = true;
          break;
        }
      }
      // Summing in another order can leave cum a rounding error short: keep all candidates.
      if (!reached && !kept.empty()) threshold = std::max(threshold, kept.back());
    }
    if (options.min_p > 0.0f) {
      threshold = std::max(threshold, zmax + std::log(options.min_p));
    }

    double total = 0.0;
    for (float v : z) {
      if (v >= threshold) total += std::exp(static_cast<double>(v) - zmax);
    }
    const double target = static_cast<double>(PhiloxUniform(options.seed, step)) * total;
    double cum = 0.0;
    int32_t chosen = -1, last_kept = token;
    for (int32_t i = 0; i < n; ++i) {
      if (z[i] < threshold) continue;
      last_kept = i;
      cum += std::exp(static_cast<double>(z[i]) - zmax);
      if (cum > target) {
        chosen = i;
        break;
      }
    }
    // Rounding can leave the walk a hair short of `target`: the last kept id is the right one.
    token = chosen >= 0 ? chosen : last_kept;
  }

  SampleResult result;
  result.token_id = token;
  if (!with_logprobs) return result;
  const double lse = LogSumExp(raw);
  result.logprob = static_cast<float>(raw[token] - lse);
  result.top = TopN(raw, lse, top_n);
  return result;
}

SampleResult ScoreToken(std::span<const float> logits, int32_t vocab_limit, int32_t token_id,
                        int32_t top_n) {
  const int32_t n = std::min<int32_t>(static_cast<int32_t>(logits.size()),
                                      vocab_limit > 0 ? vocab_limit : static_cast<int32_t>(logits.size()));
  const std::span<const float> raw = logits.first(n);
  const double lse = LogSumExp(raw);
  SampleResult result;
  result.token_id = token_id;
  result.logprob = token_id >= 0 && token_id < static_cast<int32_t>(logits.size())
                       ? static_cast<float>(logits[token_id] - lse)
                       : kNegInf;
  result.top = TopN(raw, lse, top_n);
  return result;
}

}  // namespace phi::worker
