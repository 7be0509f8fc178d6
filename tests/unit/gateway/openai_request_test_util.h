// What the OpenAI request parser's tests share (openai_request_*_test.cc): the parsers' statuses
// by endpoint and the check that a body is refused naming its field.
#ifndef PHI_TESTS_UNIT_GATEWAY_OPENAI_REQUEST_TEST_UTIL_H_
#define PHI_TESTS_UNIT_GATEWAY_OPENAI_REQUEST_TEST_UTIL_H_

#include <string>
#include <string_view>

#include "services/gateway/openai_request.h"

namespace phi::gateway::openai_test {

inline constexpr char kUserMsg[] = R"([{"role": "user", "content": "x"}])";

// The parsers' statuses, by endpoint.
absl::Status Chat(std::string_view body, const OpenAiRequestLimits& limits = {});
absl::Status Completion(std::string_view body, const OpenAiRequestLimits& limits = {});
absl::Status Tokenize(std::string_view body);
absl::Status Detokenize(std::string_view body);

std::string Msg(const absl::Status& s);

// INVALID_ARGUMENT whose message starts with `prefix`.
void ExpectRefused(const absl::Status& s, std::string_view prefix, std::string_view body);

// A chat body with one user message and `field`: `value` (JSON text).
std::string WithField(std::string_view field, std::string_view value);

}  // namespace phi::gateway::openai_test

#endif  // PHI_TESTS_UNIT_GATEWAY_OPENAI_REQUEST_TEST_UTIL_H_
