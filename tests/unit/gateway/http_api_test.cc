// OpenAI JSON -> GenerateParams translation and the error mapping.
#include "services/gateway/http_api.h"

#include <gtest/gtest.h>

namespace phi::gateway {
namespace {

using nlohmann::json;

TEST(HttpApi, ChatRequestTranslates) {
  json body = json::parse(R"({"model": "m", "messages": [{"role": "developer", "content": "sys"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
      "max_tokens": 7, "temperature": 0, "top_p": 0.5, "stop": "END", "seed": 3, "top_logprobs": 2})");
  auto p = ParamsFromOpenAiChat(body, {});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->model, "m");
  EXPECT_EQ(p->stopping.max_new_tokens(), 7);
  EXPECT_EQ(p->sampling.temperature(), 0);
  EXPECT_FLOAT_EQ(p->sampling.top_p(), 0.5);
  EXPECT_EQ(p->sampling.seed(), 3u);
  ASSERT_EQ(p->stopping.stop_size(), 1);
  EXPECT_TRUE(p->logprobs);
  EXPECT_EQ(p->top_logprobs, 2);
  EXPECT_EQ(SegmentsToText(p->prompt.segments()),
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n");
}

TEST(HttpApi, OpenAiDefaultTemperatureIsOne) {
  auto p = ParamsFromOpenAiChat(json::parse(R"({"messages": [{"role": "user", "content": "x"}]})"), {});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->sampling.temperature(), 1.0f);
  EXPECT_EQ(p->stopping.max_new_tokens(), 0);  // the gateway's default applies
}

TEST(HttpApi, ChatErrorsNameTheField) {
  auto check = [](const char* body, const std::string& needle) {
    auto p = ParamsFromOpenAiChat(json::parse(body), {});
    ASSERT_FALSE(p.ok()) << body;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(needle), std::string::npos) << p.status();
  };
  check(R"({"messages": [{"role": "tool", "content": "x"}]})", "messages[0].role");
  check(R"({"messages": []})", "messages");
  check(R"({"messages": [{"role": "user", "content": "x"}], "temperature": 3000})", "temperature");
  check(R"({"messages": [{"role": "user", "content": "x"}], "n": 2})", "n:");
  check(R"({"messages": [{"role": "user", "content": "x"}], "stop": 5})", "stop");
  check(R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content");
}

TEST(HttpApi, CompletionPromptsAsTextOrIds) {
  auto p = ParamsFromOpenAiCompletion(json::parse(R"({"prompt": "hi <|im_end|>", "echo": true, "logprobs": 1})"));
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 1u);
  EXPECT_TRUE((*p)[0].parse_special);
  EXPECT_EQ((*p)[0].echo_text, "hi <|im_end|>");
  EXPECT_TRUE((*p)[0].prompt_logprobs);
  EXPECT_EQ((*p)[0].top_logprobs, 1);
  EXPECT_EQ((*p)[0].stopping.max_new_tokens(), 16);  // OpenAI's default for completions
  auto ids = ParamsFromOpenAiCompletion(json::parse(R"({"prompt": [[1, 2, 3], [4]], "max_tokens": 0})"));
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 2u);
  EXPECT_EQ((*ids)[0].prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ((*ids)[1].prompt_ids, (std::vector<int32_t>{4}));
  EXPECT_FALSE(ParamsFromOpenAiCompletion(json::parse(R"({"prompt": ""})")).ok());
  EXPECT_FALSE(ParamsFromOpenAiCompletion(json::parse(R"({"prompt": [1, "a"]})")).ok());
  EXPECT_FALSE(ParamsFromOpenAiCompletion(json::parse(R"({"echo": true})")).ok());
}

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
}

}  // namespace
}  // namespace phi::gateway
