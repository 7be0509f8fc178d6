// The parameters /v1/chat/completions and /v1/completions share: sampling (temperature, top_p,
// ..., logit_bias), stopping (max_tokens, min_tokens, stop, ...), streaming (stream,
// stream_options) and structured output (response_format, guided_*: at most one per request),
// read into one GenerateParams. Internal to the phi_gateway_openai target
// (openai_chat_request.cc, openai_completion_request.cc).
#ifndef PHI_SERVICES_GATEWAY_OPENAI_GENERATION_FIELDS_H_
#define PHI_SERVICES_GATEWAY_OPENAI_GENERATION_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/gateway/generation_service.h"
#include "services/gateway/openai_json.h"
#include "services/gateway/openai_request.h"

namespace phi::gateway {

// One of the shared parameters' names (the endpoints' own come on top; anything else: 400
// "unknown parameter").
bool IsGenerationField(std::string_view key);

// Handle() returns false for a key it does not know.
class GenerationFields {
 public:
  // `chat`: /v1/chat/completions (max_completion_tokens; max_tokens at least 1).
  GenerationFields(bool chat, const OpenAiRequestLimits& limits) : chat_(chat), limits_(limits) {}

  absl::StatusOr<bool> Handle(std::string_view key, od::value& v);
  // Checks across fields; fills the defaults.
  absl::Status Finish(int32_t default_max_tokens);

  GenerateParams& params() { return p_; }
  bool stream() const { return stream_; }
  bool include_usage() const { return include_usage_; }
  std::optional<int64_t> max_tokens() const { return max_tokens_; }
  const std::string& constraint_param() const { return constraint_param_; }

 private:
  absl::StatusOr<bool> HandleSampling(std::string_view key, od::value& v);
  absl::StatusOr<bool> HandleStopping(std::string_view key, od::value& v);
  // response_format and vLLM's guided_* extras: at most one constraint per request.
  absl::StatusOr<bool> HandleConstraint(std::string_view key, od::value& v);
  absl::Status ReadStop(od::value& v);
  absl::Status ReadStopTokenIds(od::value& v);
  absl::Status ReadStreamOptions(od::value& v);

  const bool chat_;
  const OpenAiRequestLimits& limits_;
  GenerateParams p_;
  std::optional<double> temperature_;
  std::optional<int64_t> max_tokens_, max_completion_tokens_, n_, best_of_;
  int64_t min_tokens_ = 0;
  std::string constraint_param_;
  bool stream_ = false, stream_options_ = false, include_usage_ = false;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_OPENAI_GENERATION_FIELDS_H_
