// The HTTP API's error mapping and JSON output (request parsing: openai_request_test.cc).
#include "services/gateway/http_api.h"

#include <gtest/gtest.h>

namespace phi::gateway {
namespace {

using nlohmann::json;

TEST(HttpApi, ErrorShapeAndCodes) {
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
  json e = OpenAiError(absl::InvalidArgumentError("sampling.temperature: 300 is outside [0, 100]"));
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "sampling.temperature");
  EXPECT_EQ(e["error"]["message"], "sampling.temperature: 300 is outside [0, 100]");
  EXPECT_EQ(OpenAiError(absl::UnauthenticatedError("x"))["error"]["code"], "invalid_api_key");
  EXPECT_EQ(OpenAiFinishReason(phi::v1::FINISH_REASON_LENGTH), "length");
  EXPECT_EQ(OpenAiFinishReason(phi::v1::FINISH_REASON_STOP_STRING), "stop");
  // OpenAI's param is the field as the client spelled it, paths included.
  EXPECT_EQ(OpenAiError(absl::InvalidArgumentError("messages[2].content[0].text: must be a string"))["error"]["param"],
            "messages[2].content[0].text");
  EXPECT_EQ(OpenAiError(absl::InvalidArgumentError("no field named here"))["error"]["param"], nullptr);
}

TEST(HttpApi, JsonOutputSurvivesPartialUtf8) {
  // A token may end in the middle of a character; its text must not abort the response.
  json j = {{"token", std::string("a\xe2\x82")}};
  std::string out = DumpJson(j);
  EXPECT_NE(out.find("a\xef\xbf\xbd"), std::string::npos) << out;
}

}  // namespace
}  // namespace phi::gateway
