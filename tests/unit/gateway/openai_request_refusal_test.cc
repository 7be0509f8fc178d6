// OpenAI request bodies refused with a 400 naming the field: wrong values, unimplemented and
// unknown parameters, the body's shape, depth and size.
#include "services/gateway/openai_request.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "tests/unit/gateway/openai_request_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::openai_test;  // NOLINT: the parsers' test helpers

TEST(OpenAiRequest, ChatErrorsNameTheField) {
  ExpectRefused(Chat(R"({"messages": [{"role": "tool", "content": "x"}]})"),
                "messages[0].role: tool messages are not supported", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "function", "content": "x"}]})"), "messages[0].role: function", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "bot", "content": "x"}]})"),
                "messages[0].role: must be one of system, developer, user, assistant, got \"bot\"", "");
  ExpectRefused(Chat(R"({"messages": [{"content": "x"}]})"), "messages[0].role: required", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user"}]})"), "messages[0].content: required", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": null}]})"), "messages[0].content: required", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": "x", "name": "bob"}]})"),
                "messages[0].name: not supported", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
      {"role": "user", "content": "x"}]})"),
                "messages[0].tool_calls: not supported", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": "x", "tool_call_id": "1"}]})"),
                "messages[0].tool_call_id: unknown parameter", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})"),
                "messages[0].content[0].type: only \"text\" parts are supported, got \"image_url\"", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "image_url": {}}]}]})"),
                "messages[0].content[0].image_url: unknown parameter", "");
  ExpectRefused(Chat("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}" + std::string(1, '\0')),
                "body: not valid JSON (TRAILING_CONTENT)", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
                "messages[0].content[0].type: only \"text\" parts are supported, got \"image_url\"", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})"),
                "messages[0].content[0].text: required", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type":
      "text", "text": "b"}, {"type": "text", "text": ["c"]}]}]})"),
                "messages[1].content[1].text: must be a string, got array", "");
  ExpectRefused(Chat(R"({"messages": []})"), "messages: must not be empty", "");
  ExpectRefused(Chat(R"({"model": "m"})"), "messages: required", "");
  ExpectRefused(Chat(R"({"messages": [{"role": "assistant", "content": "x"}]})"), "messages:", "no user message");
  ExpectRefused(Chat(WithField("temperature", "3000")), "temperature: must be a number in [0, 100], got 3000", "");
  ExpectRefused(Chat(WithField("n", "17")), "n: must be an integer in [1, 16], got 17", "");
  ExpectRefused(Chat(WithField("stop", "5")), "stop: must be a string or an array of strings, got number", "");
  ExpectRefused(Chat(WithField("stop", "\"\"")), "stop: must be a non-empty string", "");
  ExpectRefused(Chat(WithField("stop", "[\"a\", \"\"]")), "stop[1]: must be a non-empty string", "");
  ExpectRefused(Chat(WithField("stop", absl::StrCat("\"", std::string(257, 'x'), "\""))),
                "stop: must be a non-empty string", "");
  ExpectRefused(
      Chat(WithField("stop", R"(["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"])")),
      "stop: at most 16 strings", "");
  ExpectRefused(Chat(WithField("stop_token_ids", "[-1]")), "stop_token_ids[0]: must be an integer in [0, 2147483647]",
                "");
  ExpectRefused(Chat(WithField("model", absl::StrCat("\"", std::string(257, 'm'), "\""))),
                "model: must be a string of at most 256 bytes, got 257", "");
  ExpectRefused(Chat(WithField("stream", "1")), "stream: must be a boolean, got number", "");
  ExpectRefused(Chat(WithField("stream", "\"yes\"")), "stream: must be a boolean, got string", "");
  ExpectRefused(Chat(WithField("stream_options", R"({"include_usage": true})")),
                "stream_options: only allowed when stream is true", "");
  ExpectRefused(Chat(WithField("stream_options", R"({"include_usage": 1})")), "stream_options.include_usage:", "");
  ExpectRefused(Chat(WithField("top_logprobs", "21")), "top_logprobs: must be an integer in [0, 20], got 21", "");
  ExpectRefused(Chat(WithField("repetition_penalty", "0")), "repetition_penalty: must be a number in (0, 10]", "");
  ExpectRefused(Chat(WithField("top_k", "-2")), "top_k: must be an integer in [-1, 2147483647], got -2", "");
  ExpectRefused(Chat(WithField("max_tokens", "0")), "max_tokens: must be an integer in [1, 16777216], got 0", "");
  ExpectRefused(Chat(WithField("max_tokens", "16777217")), "max_tokens: must be an integer in [1, 16777216]", "");
}

TEST(OpenAiRequest, TopPZeroIsRefused) {
  EXPECT_EQ(Msg(Chat(WithField("top_p", "0"))),
            "top_p: must be a number in (0, 1], got 0 (use temperature 0 for greedy)");
  ExpectRefused(Chat(WithField("top_p", "0.0")), "top_p: must be a number in (0, 1], got 0.0 (use temperature 0", "");
  ExpectRefused(Completion(R"({"prompt": "a", "top_p": 0})"), "top_p: must be a number in (0, 1], got 0 (use", "");
  ExpectRefused(Chat(WithField("top_p", "1.5")), "top_p: must be a number in (0, 1], got 1.5", "");
  EXPECT_EQ(Msg(Chat(WithField("top_p", "\"0\""))), "top_p: must be a number in (0, 1], got string");
  // Below float's range: still positive (0 would mean "off").
  auto tiny = ParseChatCompletionRequest(WithField("top_p", "1e-300"), {});
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_GT(tiny->params.sampling.top_p(), 0);
}

TEST(OpenAiRequest, FloatMaxTokensIsRefused) {
  EXPECT_EQ(Msg(Chat(WithField("max_tokens", "2.5"))), "max_tokens: must be an integer in [1, 16777216], got 2.5");
  ExpectRefused(Chat(WithField("max_tokens", "16.0")), "max_tokens: must be an integer in [1, 16777216], got 16.0", "");
  ExpectRefused(Chat(WithField("max_tokens", "1e3")), "max_tokens: must be an integer in [1, 16777216], got 1e3", "");
  ExpectRefused(Chat(WithField("max_completion_tokens", "7.0")), "max_completion_tokens: must be an integer", "");
  ExpectRefused(Completion(R"({"prompt": "a", "max_tokens": 16.0})"), "max_tokens: must be an integer in [0, 16777216]",
                "");
  ExpectRefused(Chat(WithField("n", "1.0")), "n: must be an integer", "");
  ExpectRefused(Chat(WithField("seed", "3.0")), "seed: must be an integer", "");
}

TEST(OpenAiRequest, TokenIdsOutOfRangeAreRefused) {
  // 2^32 + 1 would wrap to 1 in an int32 cast.
  ExpectRefused(Completion(R"({"prompt": [1, 2, 3, 4, 5, 4294967297]})"),
                "prompt[5]: must be an integer in [0, 2147483647], got 4294967297", "");
  ExpectRefused(Completion(R"({"prompt": [[1], [1, 2, 3, 4, 5, 4294967297]]})"),
                "prompt[1][5]: must be an integer in [0, 2147483647], got 4294967297", "");
  ExpectRefused(Completion(R"({"prompt": [2147483648]})"), "prompt[0]: must be an integer in [0, 2147483647]", "");
  ExpectRefused(Completion(R"({"prompt": [[2147483648]]})"), "prompt[0][0]: must be an integer", "");
  ExpectRefused(Completion(R"({"prompt": [-1]})"), "prompt[0]: must be an integer in [0, 2147483647], got -1", "");
  ExpectRefused(Completion(R"({"prompt": [1.0]})"), "prompt[0]: must be an integer", "");
  ExpectRefused(Completion(R"({"prompt": [18446744073709551617]})"), "prompt[0]: must be an integer", "");
  ExpectRefused(Chat(WithField("stop_token_ids", "[4294967297]")), "stop_token_ids[0]: must be an integer", "");
  EXPECT_TRUE(Completion(R"({"prompt": [2147483647]})").ok());
}

TEST(OpenAiRequest, PromptShapes) {
  ExpectRefused(Completion(R"({"prompt": ""})"), "prompt: must not be empty", "");
  ExpectRefused(Completion(R"({"prompt": []})"), "prompt: must not be empty", "");
  ExpectRefused(Completion(R"({"prompt": ["a", ""]})"), "prompt[1]: must not be empty", "");
  ExpectRefused(Completion(R"({"prompt": [[1], []]})"), "prompt[1]: must not be empty", "");
  ExpectRefused(Completion(R"({"prompt": [1, "a"]})"), "prompt[1]: must be a token id like prompt[0], got string", "");
  ExpectRefused(Completion(R"({"prompt": ["a", 1]})"), "prompt[1]: must be a string like prompt[0], got number", "");
  ExpectRefused(Completion(R"({"prompt": ["a", [1]]})"), "prompt[1]: must be a string like prompt[0], got array", "");
  ExpectRefused(Completion(R"({"prompt": [[1], "a"]})"), "prompt[1]: must be an array of token ids", "");
  ExpectRefused(Completion(R"({"prompt": [[1], [[1]]]})"), "prompt[1][0]: must be an integer", "");
  ExpectRefused(Completion(R"({"prompt": [{"a": 1}]})"), "prompt[0]: must be a string, a token id or an array", "");
  ExpectRefused(Completion(R"({"prompt": 5})"), "prompt: must be a string, an array of strings", "");
  ExpectRefused(Completion(R"({"echo": true})"), "prompt: required", "");
  OpenAiRequestLimits small;
  small.max_prompts = 2;
  small.max_prompt_token_ids = 3;
  ExpectRefused(Completion(R"({"prompt": ["a", "b", "c"]})", small), "prompt: at most 2 prompts", "");
  ExpectRefused(Completion(R"({"prompt": [[1], [2], [3]]})", small), "prompt: at most 2 prompts", "");
  ExpectRefused(Completion(R"({"prompt": [1, 2, 3, 4]})", small), "prompt: at most 3 token ids", "");
  ExpectRefused(Completion(R"({"prompt": [[1, 2, 3, 4]]})", small), "prompt[0]: at most 3 token ids", "");
  EXPECT_TRUE(Completion(R"({"prompt": [[1, 2, 3], [4]]})", small).ok());
}

TEST(OpenAiRequest, UnimplementedParametersAreRefused) {
  ExpectRefused(Chat(WithField("response_format", R"({"type": "xml"})")), "response_format.type: must be one of", "");
  ExpectRefused(Chat(WithField("response_format", R"({})")), "response_format.type: required", "");
  ExpectRefused(Chat(WithField("response_format", R"({"type": "text", "strict": true})")),
                "response_format.strict: unknown parameter", "");
  ExpectRefused(Chat(WithField("tools", R"([{"type": "function", "function": {"name": "f"}}])")),
                "tools: not supported yet", "");
  ExpectRefused(Chat(WithField("tool_choice", "\"required\"")), "tool_choice: only \"none\", \"auto\" or null", "");
  ExpectRefused(Chat(WithField("tool_choice", R"({"type": "function"})")), "tool_choice: only", "");
  ExpectRefused(Chat(WithField("functions", R"([{"name": "f"}])")), "functions: not supported yet", "");
  ExpectRefused(Chat(WithField("service_tier", "\"flex\"")), "service_tier: only \"auto\" or \"default\"", "");
  ExpectRefused(Chat(WithField("store", "true")), "store: true is not supported", "");
  ExpectRefused(Chat(WithField("metadata", R"({"k": "v"})")), "metadata: not supported", "");
  ExpectRefused(Chat(WithField("modalities", R"(["text", "audio"])")), "modalities: only [\"text\"]", "");
  ExpectRefused(Chat(WithField("modalities", R"(["audio"])")), "modalities[0]: only \"text\"", "");
  for (const char* f : {"reasoning_effort", "prediction", "audio", "web_search_options", "guided_decoding_backend",
                        "skip_special_tokens", "chat_template_kwargs"}) {
    ExpectRefused(Chat(WithField(f, "1")), std::string(f) + ": unknown parameter", f);
  }
  EXPECT_TRUE(Chat(WithField("tool_choice", "\"auto\"")).ok());
  EXPECT_TRUE(Chat(WithField("service_tier", "\"default\"")).ok());
}

TEST(OpenAiRequest, UnknownAndDuplicateKeys) {
  EXPECT_EQ(Msg(Chat(WithField("foo", "1"))), "foo: unknown parameter");
  EXPECT_EQ(Msg(Chat(WithField("foo", "null"))), "foo: unknown parameter");
  const std::string long_key(100, 'k');
  EXPECT_EQ(Msg(Chat(WithField(long_key, "1"))), std::string(64, 'k') + "...: unknown parameter");
  EXPECT_EQ(Msg(Chat(WithField("a\\u0001\\\"b\\u00e9", "1"))), "a\\x01\"b\\xc3\\xa9: unknown parameter");
  EXPECT_EQ(Msg(Chat(R"({"messages": [{"role": "user", "content": "x"}], "model": "a", "model": "b"})")),
            "model: given twice");
  EXPECT_EQ(Msg(Chat(R"({"messages": [{"role": "user", "content": "x"}], "model": null, "m\u006fdel": "b"})")),
            "model: given twice");
  EXPECT_EQ(Msg(Chat(R"({"messages": [{"role": "user", "role": "user", "content": "x"}]})")),
            "messages[0].role: given twice");
  EXPECT_EQ(Msg(Chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "text": "b"}]}]})")),
            "messages[0].content[0].text: given twice");
  EXPECT_EQ(Msg(Chat(R"({"messages": [{"role": "user", "content": "x"}], "messages": []})")), "messages: given twice");
  ExpectRefused(Chat(WithField("stream_options", R"({"include_usage": true, "include_usage": true})")),
                "stream_options.include_usage: given twice", "");
  ExpectRefused(Chat(WithField("stream_options", R"({"continuous_usage_stats": true})")),
                "stream_options.continuous_usage_stats: unknown parameter", "");
  ExpectRefused(Completion(R"({"prompt": "a", "prompt": "b"})"), "prompt: given twice", "");
}

TEST(OpenAiRequest, BodyShape) {
  EXPECT_EQ(Msg(Chat("")), "body: not valid JSON (EMPTY)");
  EXPECT_EQ(Msg(Chat(" \n\t")), "body: not valid JSON (EMPTY)");
  EXPECT_EQ(Msg(Chat("[]")), "body: must be a JSON object, got array");
  EXPECT_EQ(Msg(Chat("[{\"messages\": []}]")), "body: must be a JSON object, got array");
  EXPECT_EQ(Msg(Chat("\"x\"")), "body: must be a JSON object, got string");
  EXPECT_EQ(Msg(Chat("1")), "body: must be a JSON object, got number");
  EXPECT_EQ(Msg(Chat("null")), "body: must be a JSON object, got null");
  EXPECT_EQ(Msg(Completion("true")), "body: must be a JSON object, got boolean");
  ExpectRefused(Chat("hello"), "body: not valid JSON (", "");
  ExpectRefused(Chat("{"), "body: not valid JSON (", "");
  ExpectRefused(Chat("{\"model\": \"x\""), "body: not valid JSON (", "");
  ExpectRefused(Chat("{\"model\": \"x}"), "body: not valid JSON (", "");
  EXPECT_EQ(Msg(Chat(WithField("model", "\"x\"") + " x")), "body: not valid JSON (TRAILING_CONTENT)");
  EXPECT_EQ(Msg(Chat(WithField("model", "\"x\"") + "{}")), "body: not valid JSON (TRAILING_CONTENT)");
  EXPECT_TRUE(Chat(WithField("model", "\"x\"") + " \r\n").ok());
  // Broken JSON inside: refused, whatever the field.
  for (const char* body :
       {R"({"model": tru})", R"({"model" "x"})", R"({"model": "x",})", R"({"messages": [{"role": "user",
       "content": "x"},]})",
        R"({,"model": "x"})", R"({"model": "x" "user": "y"})", R"({"stream": nul})", R"({"max_tokens": 01})",
        R"({"max_tokens": -})", R"({"max_tokens": 1.})", R"({"temperature": .5})",
        R"({"messages": [{"role": "user", "content": "x"}}])", R"({"stop": ["a" "b"]})", R"({"model": 'x'})",
        R"({model: "x"})", "{\"model\": \"a\tb\"}", R"({"model": "\x"})", R"({"model": "\ud800"})"}) {
    absl::Status s = Chat(body);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << body << " -> " << s;
  }
}

TEST(OpenAiRequest, InvalidUtf8) {
  EXPECT_EQ(Msg(Chat("{\"messages\": [{\"role\": \"user\", \"content\": \"a\xff\"}]}")), "body: not valid UTF-8");
  EXPECT_EQ(Msg(Chat("{\"model\": \"\xc3\x28\"}")), "body: not valid UTF-8");
  EXPECT_EQ(Msg(Completion("{\"prompt\": \"\xed\xa0\x80\"}")), "body: not valid UTF-8");  // a UTF-16 surrogate
  EXPECT_EQ(Msg(Chat("{\"\xfe\": 1}")), "body: not valid UTF-8");
}

TEST(OpenAiRequest, NumbersAtTheEdges) {
  ExpectRefused(Chat(WithField("temperature", "1e400")), "temperature: must be a number in [0, 100], got 1e400", "");
  ExpectRefused(Chat(WithField("temperature", "-0.0001")), "temperature: must be a number in [0, 100]", "");
  EXPECT_TRUE(Chat(WithField("temperature", "100")).ok());
  EXPECT_TRUE(Chat(WithField("temperature", "-0")).ok());
  ExpectRefused(Chat(WithField("seed", "9223372036854775808")), "seed: must be an integer in [-9223372036854775808, ",
                "");
  ExpectRefused(Chat(WithField("seed", "99999999999999999999999999")), "seed: must be an integer", "");
  EXPECT_TRUE(Chat(WithField("seed", "-9223372036854775808")).ok());
  EXPECT_TRUE(Chat(WithField("seed", "9223372036854775807")).ok());
  ExpectRefused(Chat(WithField("max_tokens", absl::StrCat("1", std::string(400, '0')))),
                "max_tokens: must be an integer", "");
  ExpectRefused(Chat(WithField("max_tokens", std::string(5000, '9'))), "max_tokens: must be an integer", "");
  const std::string long_number = "0." + std::string(100000, '1');
  ExpectRefused(Chat(WithField("temperature", long_number + "e9")), "temperature:", "");
  for (const char* nan : {"NaN", "nan", "Infinity", "-Infinity", "inf", "+1", "0x10", "1_000"}) {
    absl::Status s = Chat(WithField("temperature", nan));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << nan << " -> " << s;
    s = Chat(WithField("max_tokens", nan));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << nan << " -> " << s;
  }
}

TEST(OpenAiRequest, DepthIsBounded) {
  // 100-deep arrays inside a message: refused before any parsing, no recursion.
  std::string deep =
      R"({"messages": [{"role": "user", "content": )" + std::string(100, '[') + std::string(100, ']') + "}]}";
  EXPECT_EQ(Msg(Chat(deep)), "body: nested deeper than 16");
  // 1,000,000 deep, unclosed; as the body and inside a field.
  const std::string million(1'000'000, '[');
  ExpectRefused(Chat(million), "body: ", "");
  EXPECT_EQ(Msg(Chat("{\"messages\": " + million)), "body: nested deeper than 16");
  EXPECT_EQ(Msg(Completion("{\"prompt\": " + std::string(1'000'000, '{'))), "body: nested deeper than 16");
  // Brackets inside strings do not count.
  const std::string brackets = std::string(40, '[') + "\\\"" + std::string(20, '{');
  EXPECT_TRUE(Chat(R"({"messages": [{"role": "user", "content": ")" + brackets + R"("}]})").ok());
  // Exactly at the limit: parsed (and refused for what it is).
  OpenAiRequestLimits limits;
  limits.max_depth = 4;
  EXPECT_EQ(Msg(Chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]})", limits)),
            "body: nested deeper than 4");
  EXPECT_TRUE(Chat(R"({"messages": [{"role": "user", "content": "x"}]})", limits).ok());
}

TEST(OpenAiRequest, LargeBodies) {
  // Over the reused parser's size: a parser of its own.
  const std::string big(200'000, 'a');
  auto r = ParseChatCompletionRequest(R"({"messages": [{"role": "user", "content": ")" + big + R"("}]})", {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.prompt.segments().segments(1).text(), "user\n" + big);
  // Then a small one on the same thread.
  EXPECT_TRUE(Chat(WithField("model", "\"m\"")).ok());
  // Over ChatmlOptions::max_message_bytes (1 MiB).
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": ")" + std::string((1 << 20) + 1, 'b') + R"("}]})"),
                "messages[0].content:", "");
  OpenAiRequestLimits small;
  small.max_messages = 2;
  ExpectRefused(Chat(R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
      {"role": "user", "content": "z"}]})",
                     small),
                "messages: at most 2 messages", "");
  small.max_stop = 1;
  ExpectRefused(Chat(WithField("stop", R"(["a", "b"])"), small), "stop: at most 1 strings", "");
}

}  // namespace
}  // namespace phi::gateway
