// Structured output in OpenAI request bodies: response_format (json_object, json_schema) and
// vLLM's guided_json / guided_regex / guided_grammar / guided_choice, each read into a
// phi.v1.Constraint field. Internal to the phi_gateway_openai target (openai_generation_fields.cc
// decides which one a request uses).
#ifndef PHI_SERVICES_GATEWAY_OPENAI_STRUCTURED_OUTPUT_H_
#define PHI_SERVICES_GATEWAY_OPENAI_STRUCTURED_OUTPUT_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "phi/v1/common.pb.h"
#include "services/gateway/openai_json.h"

namespace phi::gateway {

// A JSON schema given as an object: its text as sent (trimmed). With `in_string`, also a string
// holding one (vLLM's guided_json).
absl::Status ReadSchema(od::value& v, std::string_view name, size_t max_depth, bool in_string, std::string* out);

// response_format: {"type": "text"} (no constraint) | {"type": "json_object"} |
// {"type": "json_schema", "json_schema": {...}}.
absl::Status ReadResponseFormat(od::value& v, size_t max_depth, phi::v1::Constraint* c);

// guided_regex, guided_grammar: a non-empty string of at most kMaxConstraintBytes.
absl::Status ReadConstraintText(od::value& v, std::string_view name, std::string* out);

// guided_choice: 1 to kMaxGuidedChoices non-empty strings, at most kMaxConstraintBytes together.
absl::Status ReadGuidedChoice(od::value& v, phi::v1::ChoiceList* out);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_OPENAI_STRUCTURED_OUTPUT_H_
