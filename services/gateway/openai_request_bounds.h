// The bounds of the OpenAI request parsers (openai_*_request.cc and the readers they share),
// internal to the phi_gateway_openai target: those shared with the gRPC API and the worker
// (services/common/request_limits.h) under the names the parsers use, and the HTTP API's own.
#ifndef PHI_SERVICES_GATEWAY_OPENAI_REQUEST_BOUNDS_H_
#define PHI_SERVICES_GATEWAY_OPENAI_REQUEST_BOUNDS_H_

#include <cstddef>
#include <cstdint>
#include <limits>

#include "services/common/request_limits.h"

namespace phi::gateway {

using common::kMaxConstraintBytes;  // a schema, regex or grammar; guided_choice's strings together
using common::kMaxLogitBias;
using common::kMaxStopTokenIds;
constexpr int64_t kMaxChoices = common::kMaxChoices;  // n, best_of
constexpr int64_t kMaxLogprobs = common::kMaxTopLogprobs;
constexpr size_t kMaxStopBytes = common::kMaxStopStringBytes;  // one stop string
constexpr size_t kMaxGuidedChoices = common::kMaxConstraintChoices;
constexpr double kMaxBias = common::kMaxAbsLogitBias;
constexpr double kMaxPenalty = common::kMaxAbsPenalty;  // presence_penalty, frequency_penalty

// The HTTP API's own bounds.
constexpr int64_t kMaxTokens = int64_t{1} << 24;
constexpr int64_t kMaxTokenId = std::numeric_limits<int32_t>::max();
constexpr size_t kMaxNameBytes = 256;          // model, user
constexpr size_t kMaxDescriptionBytes = 4096;  // response_format.json_schema.description

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_OPENAI_REQUEST_BOUNDS_H_
