// The bounds on a generation request: the gateway checks them before any worker sees the request
// (services/gateway/request_validation.cc, openai_generation_fields.cc) and the worker's engine
// checks them again (Engine::Validate in services/worker/engine/engine.cc), both from this one table.
// proto/phi/v1/common.proto, gateway.proto and worker.proto state the same ranges to clients.
// Bounds that depend on the served model (vocabulary size, context length) are not here: each
// side reads them from the model it serves or routes to.
//
// On the wire 0 means "the model's default" for top_p, top_k and repetition_penalty: the gateway
// accepts 0 there and the worker replaces it before the engine validates, so the engine sees
// top_p and repetition_penalty in (0, max].
#ifndef PHI_SERVICES_COMMON_REQUEST_LIMITS_H_
#define PHI_SERVICES_COMMON_REQUEST_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace phi::common {

// request_id: at most this many bytes.
inline constexpr size_t kMaxRequestIdBytes = 128;

// sampling.temperature in [0, kMaxTemperature]; 0 is greedy.
inline constexpr float kMaxTemperature = 100.0f;
// sampling.top_p in (0, kMaxTopP].
inline constexpr float kMaxTopP = 1.0f;
// sampling.min_p in [0, kMaxMinP]; 0 is off.
inline constexpr float kMaxMinP = 1.0f;
// sampling.repetition_penalty in (0, kMaxRepetitionPenalty]; 1 is off.
inline constexpr float kMaxRepetitionPenalty = 10.0f;
// sampling.presence_penalty and frequency_penalty in [-kMaxAbsPenalty, kMaxAbsPenalty].
inline constexpr float kMaxAbsPenalty = 2.0f;
// sampling.top_k in [0, vocabulary size]; 0 is off. The upper bound is the model's.

// sampling.logit_bias: at most kMaxLogitBias entries, each value in [-kMaxAbsLogitBias,
// kMaxAbsLogitBias] (OpenAI's range; ids in [0, vocabulary size)).
inline constexpr size_t kMaxLogitBias = 1024;
inline constexpr float kMaxAbsLogitBias = 100.0f;

// sampling.constraint: a json_schema, regex or grammar text of 1 to kMaxConstraintBytes bytes;
// choice.choices: 1 to kMaxConstraintChoices strings of at most kMaxConstraintBytes each (the
// HTTP API's guided_choice: at most kMaxConstraintBytes together).
inline constexpr size_t kMaxConstraintBytes = size_t{64} << 10;
inline constexpr size_t kMaxConstraintChoices = 256;

// stopping.stop: at most kMaxStopStrings strings of 1 to kMaxStopStringBytes bytes (matched by
// the gateway on decoded text; the worker never sees them).
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
// stopping.stop_token_ids: at most kMaxStopTokenIds ids (matched by the worker).
inline constexpr size_t kMaxStopTokenIds = 64;

// top_logprobs in [0, kMaxTopLogprobs] (OpenAI's bound).
inline constexpr int32_t kMaxTopLogprobs = 20;
// n in [1, kMaxChoices] and best_of in [n, kMaxChoices] (gateway only: one worker request each).
inline constexpr int32_t kMaxChoices = 16;
// The worker's GenerateRequest.priority in [-kMaxAbsPriority, kMaxAbsPriority].
inline constexpr int32_t kMaxAbsPriority = 100;

// The largest GenerateRequest (proto/phi/v1/worker.proto) these bounds let through for a model of
// `context_tokens` positions, serialized: the worker's gRPC receive limit (ServerOptions::
// max_receive_message_bytes), so that gRPC refuses a larger message with RESOURCE_EXHAUSTED before
// the worker parses it. Generous per field (a varint id or tag in at most 5 bytes, a length prefix
// in 3), since a request the engine would accept must never be cut here. For Phi-1.5's 2,048
// positions: about 16.9 MB, nearly all of it a choice constraint's 256 strings of 64 KiB.
constexpr int64_t MaxGenerateRequestBytes(int64_t context_tokens) {
  constexpr int64_t kField = 8;  // tag + length prefix of a string or message field, rounded up
  const int64_t prompt_ids = kField + context_tokens * 5;
  constexpr int64_t request_id = kField + static_cast<int64_t>(kMaxRequestIdBytes);
  // logit_bias map entries: tag, length, key tag + varint, value tag + float.
  constexpr int64_t logit_bias = static_cast<int64_t>(kMaxLogitBias) * (2 + 6 + 5);
  // The largest constraint: a choice list at its bounds (a schema, regex or grammar is one text).
  constexpr int64_t constraint =
      kField + static_cast<int64_t>(kMaxConstraintChoices) * (kField + static_cast<int64_t>(kMaxConstraintBytes));
  constexpr int64_t stop = static_cast<int64_t>(kMaxStopStrings) * (kField + static_cast<int64_t>(kMaxStopStringBytes)) +
                           kField + static_cast<int64_t>(kMaxStopTokenIds) * 5;
  // The scalar fields, the adapter's name and the messages' own framing, with room to spare.
  constexpr int64_t rest = int64_t{64} << 10;
  return prompt_ids + request_id + logit_bias + constraint + stop + rest;
}

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_REQUEST_LIMITS_H_
