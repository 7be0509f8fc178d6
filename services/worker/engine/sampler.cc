#include "services/worker/engine/sampler.h"

#include <algorithm>
#include <bit>
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

bool MaskAllows(std::span<const uint32_t> words, int32_t id) {
  const size_t w = static_cast<size_t>(id) / 32;
  return w < words.size() && ((words[w] >> (id % 32)) & 1u) != 0;
}

bool Contains(std::span<const int32_t> ids, int32_t id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); }

// Whether the ban applies to a row of `n` ids: not when no id the mask allows would be left.
bool BanApplies(const LogitAdjust& a, int32_t n) {
  if (a.banned.empty()) return false;
  if (a.allowed.empty()) return true;
  for (size_t w = 0; w < a.allowed.size(); ++w) {
    for (uint32_t bits = a.allowed[w]; bits != 0; bits &= bits - 1) {
      const int32_t id = static_cast<int32_t>(w * 32) + std::countr_zero(bits);
      if (id >= n) return false;
      if (!Contains(a.banned, id)) return true;
    }
  }
  return false;
}

// The row as LogitAdjust defines it: bias, then the ban, then the mask.
void ApplyLogitAdjust(const LogitAdjust& a, std::span<float> l) {
  const int32_t n = static_cast<int32_t>(l.size());
  for (const TokenBias& b : a.bias) {
    if (b.token_id >= 0 && b.token_id < n) l[b.token_id] += b.bias;
  }
  if (BanApplies(a, n)) {
    for (int32_t t : a.banned) {
      if (t >= 0 && t < n) l[t] = kNegInf;
    }
  }
  if (a.allowed.empty()) return;
  for (int32_t w = 0; w * 32 < n; ++w) {
    const uint32_t bits = static_cast<size_t>(w) < a.allowed.size() ? a.allowed[w] : 0u;
    if (bits == ~0u) continue;
    for (int32_t i = w * 32; i < std::min(n, w * 32 + 32); ++i) {
      if (((bits >> (i % 32)) & 1u) == 0) l[i] = kNegInf;
    }
  }
}

// ArgMax of the row ApplyLogitAdjust would build, read in place: an id the ban or the mask
// removes is skipped, a biased id counts with its bias. A new best is checked against the
// ban and the bias list only when its raw logit beats the best so far, so the pass costs
// little more than ArgMax. Lowest id on ties, as ArgMax.
int32_t AdjustedArgMax(std::span<const float> raw, const LogitAdjust& a) {
  const int32_t n = static_cast<int32_t>(raw.size());
  const bool ban = BanApplies(a, n);
  auto removed = [&](int32_t id) {
    return (!a.allowed.empty() && !MaskAllows(a.allowed, id)) || (ban && Contains(a.banned, id));
  };
  auto biased = [&](int32_t id) {
    return std::any_of(a.bias.begin(), a.bias.end(), [&](const TokenBias& b) { return b.token_id == id; });
  };
  int32_t best = -1;
  float best_value = kNegInf;
  for (int32_t i = 0; i < n; ++i) {
    if (raw[i] > best_value && !removed(i) && !biased(i)) {
      best = i;
      best_value = raw[i];
    }
  }
  for (const TokenBias& b : a.bias) {
    if (b.token_id < 0 || b.token_id >= n || removed(b.token_id)) continue;
    const float v = raw[b.token_id] + b.bias;
    if (best < 0 || v > best_value || (v == best_value && b.token_id < best)) {
      best = b.token_id;
      best_value = v;
    }
  }
  if (best >= 0) return best;
  for (int32_t i = 0; i < n; ++i) {  // every id left is -inf: the lowest one left
    if (!removed(i)) return i;
  }
  return 0;
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

// The temperature draw after top-k: top-p over the top-k survivors, min-p, then one uniform
// walked through the kept ids in id order. z[j] is the scaled logit of ids[j] (ids ascending;
// empty ids: z[j] is id j's). Shared by SampleToken (the whole row) and SampleFromCandidates
// (the candidates sorted by id): the same sums in the same order give the same token.
int32_t Draw(std::span<const int32_t> ids, std::span<const float> z, int32_t argmax_token, float zmax,
             float threshold, const SamplingOptions& options, uint64_t step) {
  auto id_of = [&](size_t j) { return ids.empty() ? static_cast<int32_t>(j) : ids[j]; };
  std::vector<float> kept;  // survivors of top-k, sorted descending (only when top-p needs it)
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
  int32_t chosen = -1, last_kept = argmax_token;
  for (size_t j = 0; j < z.size(); ++j) {
    if (z[j] < threshold || z[j] == kNegInf) continue;  // -inf: removed by a LogitAdjust
    last_kept = id_of(j);
    cum += std::exp(static_cast<double>(z[j]) - zmax);
    if (cum > target) {
      chosen = id_of(j);
      break;
    }
  }
  // Rounding can leave the walk a hair short of `target`: the last kept id is the right one.
  return chosen >= 0 ? chosen : last_kept;
}

}  // namespace

SampleResult SampleToken(std::span<const float> logits, int32_t vocab_limit,
                         const SamplingOptions& options, uint64_t step,
                         const PenaltyHistory* history, bool with_logprobs, int32_t top_n,
                         const LogitAdjust& adjust) {
  const int32_t n = std::min<int32_t>(static_cast<int32_t>(logits.size()),
                                      vocab_limit > 0 ? vocab_limit : static_cast<int32_t>(logits.size()));
  const std::span<const float> raw = logits.first(n);
  const bool penalize = history != nullptr && options.has_penalties();

  // The adjusted row, built only when penalties or a temperature draw need it; it then
  // becomes the scaled row z in place.
  std::vector<float> adjusted;
  std::span<const float> l = raw;
  if (penalize || (adjust.active() && !options.greedy())) {
    adjusted.assign(raw.begin(), raw.end());
    ApplyLogitAdjust(adjust, adjusted);
    if (penalize) ApplyPenalties(options, *history, &adjusted);
    l = adjusted;
  }

  int32_t token = adjust.active() && adjusted.empty() ? AdjustedArgMax(raw, adjust) : ArgMax(l);
  if (!options.greedy()) {
    const float inv_t = 1.0f / options.temperature;
    std::vector<float> scaled;
    if (adjusted.empty()) scaled.resize(n);
    std::vector<float>& z = adjusted.empty() ? scaled : adjusted;
    for (int32_t i = 0; i < n; ++i) z[i] = l[i] * inv_t;
    float threshold = kNegInf;
    if (options.top_k > 0 && options.top_k < n) {
      std::vector<float> tmp(z);
      std::nth_element(tmp.begin(), tmp.begin() + (options.top_k - 1), tmp.end(), std::greater<float>());
      threshold = tmp[options.top_k - 1];
    }
    token = Draw({}, z, token, z[token], threshold, options, step);
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

namespace {

bool CandidatesComplete(const LogitCandidates& c) { return c.bound == kNegInf; }

bool CandidateOrder(float va, int32_t a, float vb, int32_t b) { return va > vb || (va == vb && a < b); }

// log-sum-exp of the shards' log-sum-exps, shifted by their max (`max_lse`).
double LogSumExpOfShards(std::span<const CandidateShard> shards, double max_lse) {
  if (max_lse == kNegInf) return max_lse;
  double sum = 0.0;
  for (const CandidateShard& s : shards) sum += std::exp(s.log_sum_exp - max_lse);
  return max_lse + std::log(sum);
}

// SampleToken's top-k threshold from the candidates (kNegInf when top-k is off or keeps all).
float TopKThreshold(const LogitCandidates& c, const SamplingOptions& o, float inv_t) {
  const int32_t size = static_cast<int32_t>(c.ids.size());
  if (o.top_k <= 0 || (CandidatesComplete(c) && o.top_k >= size)) return kNegInf;
  return c.values[o.top_k - 1] * inv_t;
}

}  // namespace

int32_t CandidatesNeeded(const SamplingOptions& options, int32_t vocab_limit, bool with_logprobs, int32_t top_n,
                         int32_t max_candidates, const LogitAdjust& adjust) {
  if (options.has_penalties() || adjust.active()) return 0;
  int32_t need = std::max(1, with_logprobs ? top_n : 0);
  if (!options.greedy()) {
    if (options.top_k > 0 && options.top_k < vocab_limit) {
      // One more than top_k, so that the k-th value sits strictly above what was left out.
      need = std::max(need, options.top_k + 1);
    } else if (options.min_p > 0.0f && options.top_p >= 1.0f) {
      need = max_candidates;
    } else {
      return 0;  // pure temperature or top-p over the whole row
    }
  }
  return need <= max_candidates ? need : 0;
}

bool CandidatesCover(const LogitCandidates& c, const SamplingOptions& options, int32_t top_n) {
  const int32_t size = static_cast<int32_t>(c.ids.size());
  if (size == 0 || c.values.size() != c.ids.size()) return false;
  if (top_n > c.exact && !CandidatesComplete(c)) return false;
  if (options.has_penalties()) return false;
  if (options.greedy() || CandidatesComplete(c)) return true;
  const float inv_t = 1.0f / options.temperature;
  if (options.top_k > 0 && options.top_k > c.exact) return false;
  float threshold = TopKThreshold(c, options, inv_t);
  if (threshold == kNegInf && options.top_p < 1.0f) return false;  // nucleus of the whole row
  if (options.min_p > 0.0f) threshold = std::max(threshold, c.values[0] * inv_t + std::log(options.min_p));
  // Everything left out scales to <= bound * inv_t: strictly below the cut, nothing kept is missing.
  return c.bound * inv_t < threshold;
}

SampleResult SampleFromCandidates(const LogitCandidates& c, const SamplingOptions& options, uint64_t step,
                                  bool with_logprobs, int32_t top_n) {
  SampleResult result;
  if (c.ids.empty()) return result;
  int32_t token = c.ids[0];  // value descending, lowest id on ties: SampleToken's argmax
  if (!options.greedy()) {
    const float inv_t = 1.0f / options.temperature;
    const float threshold = TopKThreshold(c, options, inv_t);
    std::vector<int32_t> order(c.ids.size());
    for (size_t j = 0; j < order.size(); ++j) order[j] = static_cast<int32_t>(j);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return c.ids[a] < c.ids[b]; });
    std::vector<int32_t> ids(order.size());
    std::vector<float> z(order.size());
    for (size_t j = 0; j < order.size(); ++j) {
      ids[j] = c.ids[order[j]];
      z[j] = c.values[order[j]] * inv_t;
    }
    token = Draw(ids, z, token, c.values[0] * inv_t, threshold, options, step);
  }
  result.token_id = token;
  if (!with_logprobs) return result;
  for (size_t j = 0; j < c.ids.size(); ++j) {
    if (c.ids[j] == token) result.logprob = static_cast<float>(c.values[j] - c.log_sum_exp);
  }
  const size_t k = std::min<size_t>(std::max(top_n, 0), c.ids.size());
  result.top.reserve(k);
  for (size_t j = 0; j < k; ++j) {
    result.top.push_back({c.ids[j], static_cast<float>(c.values[j] - c.log_sum_exp)});
  }
  return result;
}

CandidateShard SelectCandidates(std::span<const float> logits, int32_t id0, int32_t vocab_limit, int32_t count,
                                bool log_sum_exp) {
  CandidateShard shard;
  const int32_t w = std::clamp<int32_t>(vocab_limit - id0, 0, static_cast<int32_t>(logits.size()));
  if (w == 0) return shard;
  const std::span<const float> l = logits.first(w);
  if (log_sum_exp) shard.log_sum_exp = LogSumExp(l);
  const int32_t k = std::min(count, w);
  // One pass with a heap of the best k so far, its worst on top: nearly every logit loses
  // one comparison against that worst. A later id ties below an earlier one, so only a
  // strictly larger value enters.
  auto better = [&](int32_t a, int32_t b) { return CandidateOrder(l[a], a, l[b], b); };
  std::vector<int32_t> heap(k);
  for (int32_t i = 0; i < k; ++i) heap[i] = i;
  std::make_heap(heap.begin(), heap.end(), better);
  for (int32_t i = k; i < w; ++i) {
    if (l[i] > l[heap.front()]) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = i;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  shard.ids.resize(k);
  shard.values.resize(k);
  for (int32_t j = 0; j < k; ++j) {
    shard.ids[j] = id0 + heap[j];
    shard.values[j] = l[heap[j]];
  }
  shard.truncated = w > k;
  return shard;
}

LogitCandidates MergeCandidates(std::span<const CandidateShard> shards, int32_t count) {
  LogitCandidates c;
  std::vector<std::pair<float, int32_t>> all;
  double max_lse = -std::numeric_limits<double>::infinity();
  bool truncated = false;
  for (const CandidateShard& s : shards) {
    for (size_t j = 0; j < s.ids.size(); ++j) all.emplace_back(s.values[j], s.ids[j]);
    max_lse = std::max(max_lse, s.log_sum_exp);
    if (s.truncated) {
      truncated = true;
      if (!s.values.empty()) c.bound = std::max(c.bound, s.values.back());
    }
  }
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return CandidateOrder(a.first, a.second, b.first, b.second); });
  c.ids.reserve(all.size());
  c.values.reserve(all.size());
  for (const auto& [v, id] : all) {
    c.values.push_back(v);
    c.ids.push_back(id);
  }
  c.exact = truncated ? std::min<int32_t>(count, static_cast<int32_t>(all.size())) : static_cast<int32_t>(all.size());
  c.log_sum_exp = LogSumExpOfShards(shards, max_lse);
  return c;
}

CandidateShard JoinCandidateSlices(std::span<const CandidateShard> slices, int32_t count) {
  CandidateShard joined;
  std::vector<std::pair<float, int32_t>> all;
  double max_lse = -std::numeric_limits<double>::infinity();
  for (const CandidateShard& s : slices) {
    for (size_t j = 0; j < s.ids.size(); ++j) all.emplace_back(s.values[j], s.ids[j]);
    max_lse = std::max(max_lse, s.log_sum_exp);
    joined.truncated = joined.truncated || s.truncated;
  }
  // Past `count` entries the union's selection would have stopped too.
  const size_t keep = std::min(all.size(), static_cast<size_t>(std::max(count, 0)));
  std::partial_sort(all.begin(), all.begin() + keep, all.end(), [](const auto& a, const auto& b) {
    return CandidateOrder(a.first, a.second, b.first, b.second);
  });
  if (all.size() > keep) {
    all.resize(keep);
    joined.truncated = true;
  }
  for (const auto& [v, id] : all) {
    joined.values.push_back(v);
    joined.ids.push_back(id);
  }
  joined.log_sum_exp = LogSumExpOfShards(slices, max_lse);
  return joined;
}

}  // namespace phi::worker
