// OpenAI request bodies -> validated requests for the GenerationService. Bodies are read with
// simdjson On Demand (Debian's libsimdjson 3.0): no DOM, a nesting-depth limit, typed access
// that reports a wrong type as an error (no exceptions), UTF-8 validated. Every field is checked
// for type and range; an error is INVALID_ARGUMENT whose message starts with the parameter as
// the client spelled it ("max_tokens: ...", "messages[2].content[0].text: ..."), which
// OpenAiError() turns into OpenAI's "param". A parameter we do not implement is refused with a
// 400 naming it (never silently ignored); one at its neutral value (tools [], metadata {},
// store false, ...) is accepted. Structured output (response_format json_object / json_schema,
// vLLM's guided_json / guided_regex / guided_grammar / guided_choice) becomes
// SamplingParams.constraint; the worker compiles it and refuses a bad one with a message naming
// the proto field, which ClientFieldError() renames to the parameter as sent.
// ref: https://platform.openai.com/docs/api-reference/chat/create ,
//      https://platform.openai.com/docs/api-reference/completions/create ,
//      vLLM's /tokenize and /detokenize.
#ifndef PHI_SERVICES_GATEWAY_OPENAI_REQUEST_H_
#define PHI_SERVICES_GATEWAY_OPENAI_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/request_limits.h"
#include "services/gateway/chatml.h"
#include "services/gateway/generation_service.h"

namespace phi::gateway {

// Bounds on one request beyond the body size (the HTTP server's bound).
struct OpenAiRequestLimits {
  size_t max_depth = 16;                // JSON nesting; deeper: 400 "body: nested deeper than 16"
  // A JSON schema given as an object (response_format.json_schema.schema, guided_json) nests
  // this deep, counted from its own braces (a schema's properties / items / anyOf take two
  // levels per level of the output); also for a schema in a string.
  size_t max_schema_depth = 32;
  size_t max_messages = 4096;           // messages[]
  size_t max_prompts = 256;             // completions: prompts in one request
  size_t max_prompt_token_ids = 1 << 17;  // ids in one token-id prompt (Phi-1.5's context is 2,048)
  size_t max_stop = common::kMaxStopStrings;  // stop strings
};

struct ChatCompletionRequest {
  GenerateParams params;  // ChatML segments, sampling, stopping, logprobs, n; model as sent
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // The parameter that set SamplingParams.constraint, as sent ("response_format",
  // "guided_json", "guided_regex", "guided_grammar", "guided_choice"; empty: none), for
  // ClientFieldError.
  std::string constraint_param;
};

struct CompletionRequest {
  std::vector<GenerateParams> prompts;  // one per prompt, in the order given
  std::string model;                    // as sent (may be empty: the served model)
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  // max_tokens 0 with echo (lm-eval's scoring): the prompts' params ask for 1 token and prompt
  // logprobs; the response carries only the echoed prompt.
  bool score_only = false;
  std::string constraint_param;  // as ChatCompletionRequest's
};

// vLLM's POST /tokenize: {"model", "prompt", "add_special_tokens"} or {"model", "messages",
// "add_generation_prompt"}.
struct TokenizeRequest {
  std::string model;
  phi::v1::Prompt prompt;  // text, or ChatML segments for messages
  bool parse_special = true;
  bool return_token_strs = false;
};

// vLLM's POST /detokenize: {"model", "tokens": [ids]}.
struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};

absl::StatusOr<ChatCompletionRequest> ParseChatCompletionRequest(std::string_view body, const ChatmlOptions& chatml,
                                                                 const OpenAiRequestLimits& limits = {});
absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body,
                                                         const OpenAiRequestLimits& limits = {});
absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(std::string_view body, const ChatmlOptions& chatml,
                                                     const OpenAiRequestLimits& limits = {});
absl::StatusOr<DetokenizeRequest> ParseDetokenizeRequest(std::string_view body,
                                                         const OpenAiRequestLimits& limits = {});

// A generation's error with the proto field it names ("worker group h:p: sampling.constraint.regex:
// ...") renamed to the parameter as the client sent it ("guided_regex: ..."): the constraint's
// kinds to `constraint_param`, sampling.logit_bias[<id>] to logit_bias.<id>,
// stopping.min_new_tokens to min_tokens, stopping.include_stop_str_in_output to
// include_stop_str_in_output. Other errors, and other codes than INVALID_ARGUMENT, unchanged.
absl::Status ClientFieldError(const absl::Status& status, std::string_view constraint_param);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_OPENAI_REQUEST_H_
