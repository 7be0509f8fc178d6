#include "tests/unit/gateway/openai_request_test_util.h"

#include <gtest/gtest.h>

namespace phi::gateway::openai_test {

absl::Status Chat(std::string_view body, const OpenAiRequestLimits& limits) {
  return ParseChatCompletionRequest(body, {}, limits).status();
}
absl::Status Completion(std::string_view body, const OpenAiRequestLimits& limits) {
  return ParseCompletionRequest(body, limits).status();
}
absl::Status Tokenize(std::string_view body) { return ParseTokenizeRequest(body, {}).status(); }
absl::Status Detokenize(std::string_view body) { return ParseDetokenizeRequest(body).status(); }

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

void ExpectRefused(const absl::Status& s, std::string_view prefix, std::string_view body) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << body << " -> " << s;
  EXPECT_EQ(Msg(s).substr(0, prefix.size()), prefix) << body << " -> " << s;
}

std::string WithField(std::string_view field, std::string_view value) {
  return "{\"messages\": " + std::string(kUserMsg) + ", \"" + std::string(field) + "\": " + std::string(value) + "}";
}

}  // namespace phi::gateway::openai_test
