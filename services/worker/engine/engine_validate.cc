// Engine::Validate: every field of a GenerationRequest against the request limits table
// (services/common/request_limits.h, which the gateway checks too) and the model's shape.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "services/common/request_limits.h"
#include "services/common/status_macros.h"
#include "services/worker/engine/engine.h"

namespace phi::worker {
namespace {

bool InRange(float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; }

absl::Status OutOfRange(const std::string& field, double value, const std::string& range) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, " is outside ", range));
}

// The request bounds the gateway checks too (one table for both).
using common::kMaxAbsLogitBias;
using common::kMaxAbsPenalty;
using common::kMaxAbsPriority;
using common::kMaxLogitBias;
using common::kMaxMinP;
using common::kMaxRepetitionPenalty;
using common::kMaxRequestIdBytes;
using common::kMaxStopTokenIds;
using common::kMaxTemperature;
using common::kMaxTopLogprobs;
using common::kMaxTopP;

// "[-2, 2]", "(0, 10]": a range as the messages write it.
std::string Range(char open, float lo, float hi) { return absl::StrCat(std::string(1, open), lo, ", ", hi, "]"); }

absl::Status ValidateLogitBias(const std::vector<TokenBias>& bias, int32_t vocab) {
  if (bias.size() > kMaxLogitBias) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.logit_bias: ", bias.size(), " entries, at most ", kMaxLogitBias));
  }
  for (const TokenBias& b : bias) {
    if (b.token_id < 0 || b.token_id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("sampling.logit_bias[", b.token_id,
                                                     "]: the token id is outside [0, ", vocab, ")"));
    }
    if (!InRange(b.bias, -kMaxAbsLogitBias, kMaxAbsLogitBias)) {
      return OutOfRange(absl::StrCat("sampling.logit_bias[", b.token_id, "]"), b.bias,
                        Range('[', -kMaxAbsLogitBias, kMaxAbsLogitBias));
    }
  }
  return absl::OkStatus();
}

// The sampling fields' ranges; top_k within the model's vocabulary.
absl::Status ValidateSampling(const SamplingOptions& s, int32_t vocab) {
  if (!InRange(s.temperature, 0.0f, kMaxTemperature)) {
    return OutOfRange("sampling.temperature", s.temperature, Range('[', 0, kMaxTemperature));
  }
  if (!(std::isfinite(s.top_p) && s.top_p > 0.0f && s.top_p <= kMaxTopP)) {
    return OutOfRange("sampling.top_p", s.top_p, Range('(', 0, kMaxTopP));
  }
  if (s.top_k < 0 || s.top_k > vocab) {
    return OutOfRange("sampling.top_k", s.top_k, absl::StrCat("[0, ", vocab, "]"));
  }
  if (!InRange(s.min_p, 0.0f, kMaxMinP)) return OutOfRange("sampling.min_p", s.min_p, Range('[', 0, kMaxMinP));
  if (!(std::isfinite(s.repetition_penalty) && s.repetition_penalty > 0.0f &&
        s.repetition_penalty <= kMaxRepetitionPenalty)) {
    return OutOfRange("sampling.repetition_penalty", s.repetition_penalty, Range('(', 0, kMaxRepetitionPenalty));
  }
  if (!InRange(s.presence_penalty, -kMaxAbsPenalty, kMaxAbsPenalty)) {
    return OutOfRange("sampling.presence_penalty", s.presence_penalty, Range('[', -kMaxAbsPenalty, kMaxAbsPenalty));
  }
  if (!InRange(s.frequency_penalty, -kMaxAbsPenalty, kMaxAbsPenalty)) {
    return OutOfRange("sampling.frequency_penalty", s.frequency_penalty,
                      Range('[', -kMaxAbsPenalty, kMaxAbsPenalty));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Engine::Validate(const GenerationRequest& r, int32_t* max_new_tokens) const {
  const int32_t context = shape_.max_position_embeddings;
  const int32_t vocab = shape_.vocab_size;
  if (r.request_id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id: ", r.request_id.size(), " bytes, at most ", kMaxRequestIdBytes));
  }
  if (r.prompt.empty()) return absl::InvalidArgumentError("prompt_ids: must hold at least 1 token");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_ids[", i, "] = ", r.prompt[i], " is outside [0, ", vocab, ")"));
    }
  }
  const int32_t prompt_len = static_cast<int32_t>(r.prompt.size());
  if (prompt_len > context - 1) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_ids: ", prompt_len, " tokens; the model's context is ",
                                                   context, " tokens, so at most ", context - 1,
                                                   " leave room to generate"));
  }
  PHI_RETURN_IF_ERROR(ValidateSampling(r.sampling, vocab));
  PHI_RETURN_IF_ERROR(ValidateLogitBias(r.logit_bias, vocab));
  const int32_t room = context - prompt_len;
  const StoppingOptions& stop = r.stopping;
  if (stop.max_new_tokens < 0 || stop.max_new_tokens > room) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stopping.max_new_tokens = ", stop.max_new_tokens, " is outside [1, ", room, "] (context ", context,
        " - prompt ", prompt_len, "; 0 means the default)"));
  }
  *max_new_tokens = stop.max_new_tokens > 0 ? stop.max_new_tokens : std::min(options_.default_max_new_tokens, room);
  if (stop.min_new_tokens < 0 || stop.min_new_tokens > *max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("stopping.min_new_tokens = ", stop.min_new_tokens,
                                                   " is outside [0, ", *max_new_tokens,
                                                   "] (at most stopping.max_new_tokens)"));
  }
  if (stop.stop_token_ids.size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat("stopping.stop_token_ids: ", stop.stop_token_ids.size(),
                                                   " ids, at most ", kMaxStopTokenIds));
  }
  for (size_t i = 0; i < stop.stop_token_ids.size(); ++i) {
    if (stop.stop_token_ids[i] < 0 || stop.stop_token_ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("stopping.stop_token_ids[", i, "] = ", stop.stop_token_ids[i],
                                                     " is outside [0, ", vocab, ")"));
    }
  }
  if (r.top_logprobs < 0 || r.top_logprobs > kMaxTopLogprobs) {
    return OutOfRange("top_logprobs", r.top_logprobs, absl::StrCat("[0, ", kMaxTopLogprobs, "]"));
  }
  if (r.priority < -kMaxAbsPriority || r.priority > kMaxAbsPriority) {
    return OutOfRange("priority", r.priority, absl::StrCat("[", -kMaxAbsPriority, ", ", kMaxAbsPriority, "]"));
  }
  // The last generated token is never fed back, so the cache must hold prompt + max_new - 1.
  const int64_t tokens = static_cast<int64_t>(prompt_len) + *max_new_tokens - 1;
  const int64_t blocks = (tokens + options_.block_size - 1) / options_.block_size;
  if (blocks > options_.num_kv_blocks) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", blocks, " KV blocks of ", options_.block_size, " tokens (prompt ", prompt_len,
        " + max_new_tokens ", *max_new_tokens, "), more than the whole cache of ", options_.num_kv_blocks,
        " blocks; lower stopping.max_new_tokens or shorten the prompt"));
  }
  return absl::OkStatus();
}

}  // namespace phi::worker
