// OpenAI request bodies -> GenerateParams: translation, and every field refused with a 400
// naming it for every wrong JSON type.
#include "services/gateway/openai_request.h"

#include <gtest/gtest.h>

#include <limits>
#include <set>
#include <string>
#include <vector>

namespace phi::gateway {
namespace {

constexpr char kUserMsg[] = R"([{"role": "user", "content": "x"}])";

absl::Status Chat(std::string_view body, const OpenAiRequestLimits& limits = {}) {
  return ParseChatCompletionRequest(body, {}, limits).status();
}
absl::Status Completion(std::string_view body, const OpenAiRequestLimits& limits = {}) {
  return ParseCompletionRequest(body, limits).status();
}
absl::Status Tokenize(std::string_view body) { return ParseTokenizeRequest(body, {}).status(); }
absl::Status Detokenize(std::string_view body) { return ParseDetokenizeRequest(body).status(); }

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// INVALID_ARGUMENT whose message starts with `prefix`.
void ExpectRefused(const absl::Status& s, std::string_view prefix, std::string_view body) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << body << " -> " << s;
  EXPECT_EQ(Msg(s).substr(0, prefix.size()), prefix) << body << " -> " << s;
}

std::string WithField(std::string_view field, std::string_view value) {
  return "{\"messages\": " + std::string(kUserMsg) + ", \"" + std::string(field) + "\": " + std::string(value) + "}";
}

// ---- translation ----

TEST(OpenAiRequest, ChatTranslates) {
  auto r = ParseChatCompletionRequest(R"({"model": "m", "messages": [{"role": "developer", "content": "sys"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
      "max_tokens": 7, "temperature": 0, "top_p": 0.5, "stop": "END", "seed": 3, "top_logprobs": 2,
      "stream": true, "stream_options": {"include_usage": true}})",
                                      {});
  ASSERT_TRUE(r.ok()) << r.status();
  const GenerateParams& p = r->params;
  EXPECT_EQ(p.model, "m");
  EXPECT_EQ(p.stopping.max_new_tokens(), 7);
  EXPECT_TRUE(p.sampling.has_temperature());  // an explicit 0: greedy, whatever the model's default
  EXPECT_EQ(p.sampling.temperature(), 0);
  EXPECT_FLOAT_EQ(p.sampling.top_p(), 0.5);
  EXPECT_EQ(p.sampling.seed(), 3u);
  ASSERT_EQ(p.stopping.stop_size(), 1);
  EXPECT_EQ(p.stopping.stop(0), "END");
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 2);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_FALSE(p.parse_special);
  EXPECT_EQ(SegmentsToText(p.prompt.segments()),
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n");
}

TEST(OpenAiRequest, ChatDefaults) {
  auto r = ParseChatCompletionRequest(R"({"messages": [{"role": "user", "content": "x"}]})", {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->params.sampling.has_temperature());  // the model's default applies
  EXPECT_EQ(r->params.stopping.max_new_tokens(), 0);    // the model's default applies
  EXPECT_FALSE(r->params.sampling.has_seed());
  EXPECT_FALSE(r->params.logprobs);
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->include_usage);
  EXPECT_EQ(r->params.model, "");
}

TEST(OpenAiRequest, ChatOptionsApplyToRendering) {
  ChatmlOptions chatml;
  chatml.default_system_prompt = "be nice";
  auto r = ParseChatCompletionRequest(R"({"messages": [{"role": "user", "content": "x"}]})", chatml);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(SegmentsToText(r->params.prompt.segments()),
            "<|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  chatml.max_messages = 1;
  ExpectRefused(ParseChatCompletionRequest(
                    R"({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]})", chatml)
                    .status(),
                "messages:", "max_messages 1");
}

TEST(OpenAiRequest, ChatFieldValues) {
  auto r = ParseChatCompletionRequest(
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
          {"role": "assistant", "content": null}, {"role": "user", "content": "v"}],
          "seed": -1, "top_k": -1, "min_p": 0.1, "repetition_penalty": 1.2, "presence_penalty": -2,
          "frequency_penalty": 2, "max_tokens": 5, "max_completion_tokens": 9, "stop": ["a", "b"],
          "stop_token_ids": [0, 2147483647], "ignore_eos": true, "logprobs": true, "n": 1, "user": "u1",
          "response_format": {"type": "text"}, "logit_bias": {}, "tools": [], "tool_choice": "none",
          "parallel_tool_calls": false, "functions": null, "function_call": null, "service_tier": "auto",
          "store": false, "metadata": {}, "modalities": ["text"], "temperature": null, "top_p": null})",
      {});
  ASSERT_TRUE(r.ok()) << r.status();
  const GenerateParams& p = r->params;
  EXPECT_EQ(p.sampling.seed(), std::numeric_limits<uint64_t>::max());  // int64 -1's bits
  EXPECT_EQ(p.sampling.top_k(), 0);
  EXPECT_FLOAT_EQ(p.sampling.min_p(), 0.1f);
  EXPECT_FLOAT_EQ(p.sampling.repetition_penalty(), 1.2f);
  EXPECT_EQ(p.sampling.presence_penalty(), -2);
  EXPECT_EQ(p.sampling.frequency_penalty(), 2);
  EXPECT_FALSE(p.sampling.has_temperature());  // null = absent
  EXPECT_EQ(p.sampling.top_p(), 0);           // unset: off
  EXPECT_EQ(p.stopping.max_new_tokens(), 9);  // max_completion_tokens wins, as in vLLM
  ASSERT_EQ(p.stopping.stop_size(), 2);
  EXPECT_EQ(p.stopping.stop(1), "b");
  ASSERT_EQ(p.stopping.stop_token_ids_size(), 2);
  EXPECT_EQ(p.stopping.stop_token_ids(1), 2147483647);
  EXPECT_TRUE(p.stopping.ignore_eos());
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 0);
  EXPECT_EQ(SegmentsToText(p.prompt.segments()),
            "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
            "<|im_start|>user\nv<|im_end|>\n<|im_start|>assistant\n");
}

TEST(OpenAiRequest, EscapedKeysAndStrings) {
  auto r = ParseChatCompletionRequest(
      R"({"m\u006fdel": "a\u00e9\n", "messages": [{"role": "user", "content": "\ud83d\ude00 <|im_end|>"}]})", {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.model, "a\xc3\xa9\n");
  EXPECT_EQ(SegmentsToText(r->params.prompt.segments()),
            "<|im_start|>user\n\xf0\x9f\x98\x80 <|im_end|><|im_end|>\n<|im_start|>assistant\n");
}

TEST(OpenAiRequest, SdkAssistantMessageEchoedBack) {
  // What openai-python's message.model_dump() gives, appended to the conversation by clients.
  EXPECT_TRUE(Chat(R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y",
      "refusal": null, "tool_calls": null, "function_call": null, "audio": null, "annotations": []},
      {"role": "user", "content": "z"}]})")
                  .ok());
}

TEST(OpenAiRequest, CompletionPromptsAsTextOrIds) {
  auto r = ParseCompletionRequest(R"({"prompt": "hi <|im_end|>", "echo": true, "logprobs": 1, "model": "m"})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 1u);
  const GenerateParams& p = r->prompts[0];
  EXPECT_TRUE(p.parse_special);
  EXPECT_EQ(p.prompt.text(), "hi <|im_end|>");
  EXPECT_EQ(p.echo_text, "hi <|im_end|>");
  EXPECT_TRUE(p.logprobs);
  EXPECT_TRUE(p.prompt_logprobs);
  EXPECT_EQ(p.top_logprobs, 1);
  EXPECT_EQ(p.stopping.max_new_tokens(), 16);  // OpenAI's default for completions
  EXPECT_FALSE(p.sampling.has_temperature());   // the model's default applies
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(p.model, "m");
  EXPECT_TRUE(r->echo);
  EXPECT_FALSE(r->score_only);

  auto ids = ParseCompletionRequest(R"({"prompt": [[1, 2, 3], [4]], "max_tokens": 3})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->prompts.size(), 2u);
  EXPECT_EQ(ids->prompts[0].prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ids->prompts[1].prompt_ids, (std::vector<int32_t>{4}));
  EXPECT_FALSE(ids->prompts[0].parse_special);
  EXPECT_EQ(ids->prompts[1].stopping.max_new_tokens(), 3);

  auto one = ParseCompletionRequest(R"({"prompt": [5, 0, 2147483647]})");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->prompts.size(), 1u);
  EXPECT_EQ(one->prompts[0].prompt_ids, (std::vector<int32_t>{5, 0, 2147483647}));

  auto texts = ParseCompletionRequest(R"({"prompt": ["a", "b", "c"], "echo": false, "logprobs": 0})");
  ASSERT_TRUE(texts.ok()) << texts.status();
  ASSERT_EQ(texts->prompts.size(), 3u);
  EXPECT_EQ(texts->prompts[2].prompt.text(), "c");
  EXPECT_EQ(texts->prompts[2].echo_text, "");
  EXPECT_TRUE(texts->prompts[2].logprobs);
  EXPECT_FALSE(texts->prompts[2].prompt_logprobs);
}

TEST(OpenAiRequest, CompletionScoreOnly) {
  auto r = ParseCompletionRequest(R"({"prompt": ["a b", "c"], "max_tokens": 0, "echo": true, "logprobs": 0})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->score_only);
  ASSERT_EQ(r->prompts.size(), 2u);
  EXPECT_EQ(r->prompts[0].stopping.max_new_tokens(), 1);
  EXPECT_TRUE(r->prompts[0].prompt_logprobs);
  EXPECT_EQ(r->prompts[1].echo_text, "c");
  ExpectRefused(Completion(R"({"prompt": "a", "max_tokens": 0})"), "max_tokens: 0 is allowed only with echo", "");
}

TEST(OpenAiRequest, CompletionNeutralParameters) {
  auto r = ParseCompletionRequest(R"({"prompt": "a", "suffix": "", "best_of": 1, "n": 1, "logit_bias": {},
      "stream": true, "stream_options": {"include_usage": true}, "user": "u", "seed": 9, "stop": null})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->prompts[0].sampling.seed(), 9u);
  ExpectRefused(Completion(R"({"prompt": "a", "suffix": "x"})"), "suffix: not supported", "");
  // Chat-only parameters are unknown to completions, and the other way round.
  ExpectRefused(Completion(R"({"prompt": "a", "max_completion_tokens": 3})"), "max_completion_tokens: unknown", "");
  ExpectRefused(Completion(R"({"prompt": "a", "messages": []})"), "messages: unknown parameter", "");
  ExpectRefused(Chat(WithField("echo", "true")), "echo: unknown parameter", "");
  ExpectRefused(Chat(WithField("prompt", "\"x\"")), "prompt: unknown parameter", "");
}

TEST(OpenAiRequest, TokenizeAndDetokenize) {
  auto t = ParseTokenizeRequest(R"({"model": "m", "prompt": "a <|im_end|>", "return_token_strs": true})", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->model, "m");
  EXPECT_EQ(t->prompt.text(), "a <|im_end|>");
  EXPECT_TRUE(t->parse_special);
  EXPECT_TRUE(t->return_token_strs);
  t = ParseTokenizeRequest(R"({"prompt": "", "add_special_tokens": false})", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->parse_special);
  EXPECT_FALSE(t->return_token_strs);

  t = ParseTokenizeRequest(R"({"messages": [{"role": "user", "content": "x"}]})", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(SegmentsToText(t->prompt.segments()), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  t = ParseTokenizeRequest(R"({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false})", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(SegmentsToText(t->prompt.segments()), "<|im_start|>user\nx<|im_end|>\n");

  ExpectRefused(Tokenize(R"({})"), "prompt: exactly one of prompt or messages", "");
  ExpectRefused(Tokenize(R"({"prompt": "a", "messages": [{"role": "user", "content": "x"}]})"), "prompt:", "");
  ExpectRefused(Tokenize(R"({"prompt": "a", "add_generation_prompt": true})"), "add_generation_prompt:", "");
  ExpectRefused(Tokenize(R"({"messages": [{"role": "user", "content": "x"}], "add_special_tokens": true})"),
                "add_special_tokens:", "");
  ExpectRefused(Tokenize(R"({"prompt": "a", "tokens": [1]})"), "tokens: unknown parameter", "");

  auto d = ParseDetokenizeRequest(R"({"model": "m", "tokens": [1, 2, 2147483647]})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->model, "m");
  EXPECT_EQ(d->tokens, (std::vector<int32_t>{1, 2, 2147483647}));
  d = ParseDetokenizeRequest(R"({"tokens": []})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->tokens.empty());
  ExpectRefused(Detokenize(R"({})"), "tokens: required", "");
  ExpectRefused(Detokenize(R"({"tokens": [1, 4294967297]})"), "tokens[1]: must be an integer in [0, 2147483647]", "");
  ExpectRefused(Detokenize(R"({"tokens": [1], "prompt": "x"})"), "prompt: unknown parameter", "");
}

// ---- refusals ----

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
  ExpectRefused(Chat(WithField("stop", "\"" + std::string(257, 'x') + "\"")), "stop: must be a non-empty string", "");
  ExpectRefused(
      Chat(WithField("stop", R"(["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"])")),
      "stop: at most 16 strings", "");
  ExpectRefused(Chat(WithField("stop_token_ids", "[-1]")), "stop_token_ids[0]: must be an integer in [0, 2147483647]",
                "");
  ExpectRefused(Chat(WithField("model", "\"" + std::string(257, 'm') + "\"")),
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
  ExpectRefused(Chat(WithField("max_tokens", "1" + std::string(400, '0'))), "max_tokens: must be an integer", "");
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

// ---- structured output, logit_bias, n / best_of, min_tokens ----

// `levels` objects nested in each other: {"a": {"a": ... {} ...}}.
std::string NestedObjects(size_t levels) {
  std::string s;
  for (size_t i = 1; i < levels; ++i) s += "{\"a\": ";
  s += "{}";
  s += std::string(levels - 1, '}');
  return s;
}

std::string SchemaFormat(std::string_view schema) {
  return WithField("response_format",
                   std::string(R"({"type": "json_schema", "json_schema": {"name": "out_1-A", "schema": )") +
                       std::string(schema) + "}}");
}

TEST(OpenAiRequest, ResponseFormatBecomesTheConstraint) {
  // The schema's text as sent, whitespace and all (the worker's errors point into it).
  const std::string schema = R"({"type": "object", "properties": {"n": {"type": "integer"}},
      "required": ["n"]})";
  auto r = ParseChatCompletionRequest(SchemaFormat(schema + "  \n"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.sampling.constraint().json_schema(), schema);
  EXPECT_EQ(r->constraint_param, "response_format");
  EXPECT_FALSE(r->params.sampling.constraint().any_whitespace());

  r = ParseChatCompletionRequest(WithField("response_format", R"({"type": "json_object"})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->params.sampling.constraint().json_object());
  // No schema: any JSON object.
  r = ParseChatCompletionRequest(WithField("response_format", R"({"type": "json_schema", "json_schema":
      {"name": "x", "description": "d", "strict": true, "schema": null}})"),
                                 {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->params.sampling.constraint().json_object());
  // text: no constraint.
  r = ParseChatCompletionRequest(WithField("response_format", R"({"type": "text"})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->params.sampling.has_constraint());
  EXPECT_EQ(r->constraint_param, "");
  // Also on completions (as vLLM), for every prompt.
  auto c = ParseCompletionRequest(R"({"prompt": ["a", "b"], "response_format": {"type": "json_object"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->prompts[1].sampling.constraint().json_object());
  EXPECT_EQ(c->constraint_param, "response_format");
}

TEST(OpenAiRequest, GuidedExtrasBecomeTheConstraint) {
  auto r = ParseChatCompletionRequest(WithField("guided_json", R"({"type": "array"})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.sampling.constraint().json_schema(), R"({"type": "array"})");
  EXPECT_EQ(r->constraint_param, "guided_json");
  // A string holding the schema (vLLM's clients send either), unescaped.
  r = ParseChatCompletionRequest(WithField("guided_json", R"("{\"type\": \"string\"}")"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.sampling.constraint().json_schema(), R"({"type": "string"})");
  auto c = ParseCompletionRequest(R"({"prompt": "a", "guided_regex": "[0-9]{3}\\.x"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].sampling.constraint().regex(), R"([0-9]{3}\.x)");
  EXPECT_EQ(c->constraint_param, "guided_regex");
  c = ParseCompletionRequest(R"({"prompt": "a", "guided_grammar": "root ::= \"yes\" | \"no\""})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].sampling.constraint().grammar(), R"(root ::= "yes" | "no")");
  r = ParseChatCompletionRequest(WithField("guided_choice", R"(["red", "green", "x y"])"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->params.sampling.constraint().choice().choices_size(), 3);
  EXPECT_EQ(r->params.sampling.constraint().choice().choices(2), "x y");
  EXPECT_EQ(r->constraint_param, "guided_choice");
  // null is absent, for every one of them; so is a null whitespace pattern.
  r = ParseChatCompletionRequest(WithField("guided_regex", "null"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->params.sampling.has_constraint());
  EXPECT_TRUE(Chat(WithField("guided_whitespace_pattern", "null")).ok());
}

TEST(OpenAiRequest, OneConstraintPerRequest) {
  const std::string kUser = std::string("{\"messages\": ") + kUserMsg;
  ExpectRefused(Chat(kUser + R"(, "response_format": {"type": "json_object"}, "guided_regex": "a"})"),
                "guided_regex: only one of response_format (json_object, json_schema), guided_json, guided_regex, "
                "guided_grammar, guided_choice per request; response_format is given too",
                "");
  ExpectRefused(Chat(kUser + R"(, "guided_choice": ["a"], "guided_json": {}})"),
                "guided_json: only one of", "");
  ExpectRefused(Completion(R"({"prompt": "a", "guided_grammar": "root ::= \"a\"", "guided_regex": "a"})"),
                "guided_regex: only one of", "");
  EXPECT_NE(Msg(Chat(kUser + R"(, "guided_choice": ["a"], "guided_json": {}})")).find("guided_choice is given too"),
            std::string::npos);
  // A text response_format is no constraint: fine with a guided_* one, in either order.
  EXPECT_TRUE(Chat(kUser + R"(, "response_format": {"type": "text"}, "guided_regex": "a"})").ok());
  EXPECT_TRUE(Chat(kUser + R"(, "guided_regex": "a", "response_format": {"type": "text"}})").ok());
}

TEST(OpenAiRequest, ConstraintsAreChecked) {
  auto format = [](std::string_view json_schema) {
    return Chat(WithField("response_format",
                          std::string(R"({"type": "json_schema", "json_schema": )") + std::string(json_schema) + "}"));
  };
  ExpectRefused(format(R"({"schema": {}})"), "response_format.json_schema.name: required, 1 to 64 of a-z", "");
  for (const char* name : {R"("")", R"("a b")", R"("a.b")", R"("\u00fc")"}) {
    ExpectRefused(format(std::string(R"({"name": )") + name + "}"), "response_format.json_schema.name: must be 1 to 64",
                  name);
  }
  ExpectRefused(format("{\"name\": \"" + std::string(65, 'n') + "\"}"), "response_format.json_schema.name: must be",
                "");
  EXPECT_TRUE(format("{\"name\": \"" + std::string(64, 'n') + "\"}").ok());
  ExpectRefused(format(R"({"name": "x", "schema": "{}"})"),
                "response_format.json_schema.schema: must be a JSON schema object, got string", "");
  ExpectRefused(format(R"({"name": "x", "schema": [{}]})"), "response_format.json_schema.schema: must be", "");
  // Bad JSON inside a schema: what On Demand skips unchecked is parsed again whole (a 400
  // naming the schema), or the body's own pass finds it first (a 400 for the body).
  for (const char* bad : {R"({"type": tru})", R"({"a": 1 2})", R"({"a": [1,,2]})", R"({"a" 1})"}) {
    const absl::Status st = format(std::string(R"({"name": "x", "schema": )") + bad + "}");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(Msg(st).find("not valid JSON"), std::string::npos) << bad << " -> " << st;
  }
  ExpectRefused(format(R"({"name": "x", "schema": {}, "schemas": {}})"),
                "response_format.json_schema.schemas: unknown parameter", "");
  ExpectRefused(format("{\"name\": \"x\", \"description\": \"" + std::string(4097, 'd') + "\"}"),
                "response_format.json_schema.description: must be a string of at most 4096 bytes", "");
  ExpectRefused(Chat(WithField("response_format", R"({"type": "json_schema"})")),
                "response_format.json_schema: required with type json_schema", "");
  ExpectRefused(Chat(WithField("response_format", R"({"type": "json_object", "json_schema": {"name": "x"}})")),
                "response_format.json_schema: only with type json_schema", "");
  ExpectRefused(Chat(WithField("response_format", R"({"type": "xml"})")), "response_format.type: must be one of", "");
  // 64 KiB of schema text at most.
  const std::string big = "{\"description\": \"" + std::string(64 << 10, 'd') + "\"}";
  ExpectRefused(Chat(SchemaFormat(big)), "response_format.json_schema.schema: a schema of at most 65536 bytes", "");
  ExpectRefused(Chat(WithField("guided_json", big)), "guided_json: a schema of at most 65536 bytes", "");
  // guided_json in a string: JSON, an object.
  ExpectRefused(Chat(WithField("guided_json", R"("{\"type\": ")")), "guided_json: not valid JSON", "");
  ExpectRefused(Chat(WithField("guided_json", R"("[1]")")), "guided_json: must be a JSON schema object", "");
  ExpectRefused(Chat(WithField("guided_json", R"("{} x")")), "guided_json: not valid JSON", "");
  ExpectRefused(Chat(WithField("guided_json", "[]")), "guided_json: must be a JSON schema (an object, or a string",
                "");
  // Regexes and grammars: non-empty, 64 KiB at most (their syntax is the worker's compiler's).
  ExpectRefused(Chat(WithField("guided_regex", "\"\"")), "guided_regex: must be a non-empty string", "");
  ExpectRefused(Chat(WithField("guided_grammar", "\"" + std::string((64 << 10) + 1, 'g') + "\"")),
                "guided_grammar: must be a non-empty string of at most 65536 bytes, got 65537 bytes", "");
  EXPECT_TRUE(Chat(WithField("guided_grammar", "\"" + std::string(64 << 10, 'g') + "\"")).ok());
  // Choices: 1 to 256 non-empty strings.
  ExpectRefused(Chat(WithField("guided_choice", "[]")), "guided_choice: must not be empty", "");
  ExpectRefused(Chat(WithField("guided_choice", R"(["a", ""])")), "guided_choice[1]: must not be empty", "");
  ExpectRefused(Chat(WithField("guided_choice", R"(["a", 1])")), "guided_choice[1]: must be a string, got number", "");
  std::string many = "[";
  for (int i = 0; i < 257; ++i) many += (i ? ", \"" : "\"") + std::to_string(i) + "\"";
  ExpectRefused(Chat(WithField("guided_choice", many + "]")), "guided_choice: at most 256 strings", "");
  ExpectRefused(Chat(WithField("guided_whitespace_pattern", R"("\\s*")")),
                "guided_whitespace_pattern: not supported (only null)", "");
}

TEST(OpenAiRequest, SchemasNestDeeperThanTheBody) {
  // 32 levels of schema in a body whose limit elsewhere is 16.
  auto ok = ParseChatCompletionRequest(SchemaFormat(NestedObjects(32)), {});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->params.sampling.constraint().json_schema(), NestedObjects(32));
  EXPECT_EQ(Msg(Chat(SchemaFormat(NestedObjects(33)))), "response_format.json_schema.schema: nested deeper than 32");
  EXPECT_TRUE(Chat(WithField("guided_json", NestedObjects(32))).ok());
  EXPECT_EQ(Msg(Chat(WithField("guided_json", NestedObjects(33)))), "guided_json: nested deeper than 32");
  // In a string: the same bound.
  auto quoted = [](const std::string& json) {
    std::string out = "\"";
    for (char c : json) out += c == '"' ? std::string("\\\"") : std::string(1, c);
    return out + "\"";
  };
  EXPECT_TRUE(Chat(WithField("guided_json", quoted(NestedObjects(32)))).ok());
  EXPECT_EQ(Msg(Chat(WithField("guided_json", quoted(NestedObjects(33))))), "guided_json: nested deeper than 32");
  // Arrays count too; a million brackets end the scan at once.
  EXPECT_EQ(Msg(Chat(WithField("guided_json", "{\"a\": " + std::string(1'000'000, '[')))),
            "guided_json: nested deeper than 32");
  // The raised bound is only for schemas: the same key elsewhere keeps 16.
  EXPECT_EQ(Msg(Chat(WithField("metadata", "{\"guided_json\": " + NestedObjects(20) + "}"))),
            "body: nested deeper than 16");
  EXPECT_EQ(Msg(Chat(WithField("response_format", R"({"type": "json_schema", "json_schema": {"name": "x",
      "description": )" + NestedObjects(20) + "}}"))),
            "body: nested deeper than 16");
  EXPECT_EQ(Msg(Chat(WithField("messages2", "{\"schema\": " + NestedObjects(20) + "}"))),
            "body: nested deeper than 16");
  // After the schema, the body's bound again.
  EXPECT_EQ(Msg(Chat(SchemaFormat(NestedObjects(20)) .substr(0, SchemaFormat(NestedObjects(20)).size() - 1) +
                     ", \"tools\": " + std::string(20, '[') + std::string(20, ']') + "}")),
            "body: nested deeper than 16");
  OpenAiRequestLimits limits;
  limits.max_schema_depth = 4;
  EXPECT_EQ(Msg(Chat(WithField("guided_json", NestedObjects(5)), limits)), "guided_json: nested deeper than 4");
  EXPECT_TRUE(Chat(WithField("guided_json", NestedObjects(4)), limits).ok());
}

TEST(OpenAiRequest, LogitBias) {
  auto r = ParseChatCompletionRequest(WithField("logit_bias", R"({"50256": -100, "0": 100, "7": 2.5})"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& bias = r->params.sampling.logit_bias();
  ASSERT_EQ(bias.size(), 3u);
  EXPECT_EQ(bias.at(50256), -100.0f);
  EXPECT_EQ(bias.at(0), 100.0f);
  EXPECT_EQ(bias.at(7), 2.5f);
  auto c = ParseCompletionRequest(R"({"prompt": ["a", "b"], "logit_bias": {"2147483647": 1}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[1].sampling.logit_bias().at(2147483647), 1.0f);
  for (const char* key : {"-1", "abc", "01", "2147483648", "", "1.0", " 1", "99999999999"}) {
    ExpectRefused(Chat(WithField("logit_bias", std::string("{\"") + key + "\": 1}")),
                  std::string("logit_bias.") + key + ": the key must be a token id in decimal, in [0, 2147483647]",
                  key);
  }
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": 101})")),
                "logit_bias.5: must be a number in [-100, 100], got 101", "");
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": -100.5})")), "logit_bias.5: must be a number in [-100, 100]", "");
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": "1"})")), "logit_bias.5: must be a number", "");
  ExpectRefused(Chat(WithField("logit_bias", R"({"5": 1, "5": 2})")), "logit_bias.5: given twice", "");
  ExpectRefused(Chat(WithField("logit_bias", R"([5])")), "logit_bias: must be an object", "");
  auto entries = [](int count) {
    std::string o = "{";
    for (int i = 0; i < count; ++i) o += (i ? ", \"" : "\"") + std::to_string(i) + "\": 1";
    return o + "}";
  };
  EXPECT_TRUE(Chat(WithField("logit_bias", entries(1024))).ok());
  ExpectRefused(Chat(WithField("logit_bias", entries(1025))), "logit_bias: at most 1024 entries", "");
}

TEST(OpenAiRequest, NAndBestOf) {
  auto r = ParseChatCompletionRequest(WithField("n", "3"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.n, 3);
  EXPECT_EQ(r->params.best_of, 3);
  EXPECT_FALSE(r->params.stream);
  auto c = ParseCompletionRequest(R"({"prompt": "a", "n": 2, "best_of": 5})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].n, 2);
  EXPECT_EQ(c->prompts[0].best_of, 5);
  c = ParseCompletionRequest(R"({"prompt": "a", "n": 4, "stream": true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].n, 4);
  EXPECT_TRUE(c->prompts[0].stream);
  r = ParseChatCompletionRequest(WithField("best_of", "16"), {});  // chat too, as vLLM
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.n, 1);
  EXPECT_EQ(r->params.best_of, 16);
  ExpectRefused(Chat(WithField("n", "0")), "n: must be an integer in [1, 16], got 0", "");
  ExpectRefused(Completion(R"({"prompt": "a", "best_of": 17})"), "best_of: must be an integer in [1, 16], got 17", "");
  ExpectRefused(Completion(R"({"prompt": "a", "n": 3, "best_of": 2})"),
                "best_of: must be an integer in [n, 16] = [3, 16], got 2", "");
  ExpectRefused(Completion(R"({"prompt": "a", "n": 2, "best_of": 3, "stream": true})"),
                "best_of: must equal n (2) when stream is true", "");
  EXPECT_TRUE(Completion(R"({"prompt": "a", "n": 2, "best_of": 2, "stream": true})").ok());
  ExpectRefused(Completion(R"({"prompt": "a", "n": 2, "echo": true, "max_tokens": 0})"),
                "n: must be 1 with max_tokens 0 (scoring the prompt)", "");
}

TEST(OpenAiRequest, MinTokensAndStopStrings) {
  auto r = ParseChatCompletionRequest(WithField("min_tokens", "5"), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.stopping.min_new_tokens(), 5);
  EXPECT_FALSE(r->params.stopping.include_stop_str_in_output());
  auto c = ParseCompletionRequest(R"({"prompt": "a", "max_tokens": 8, "min_tokens": 8, "stop": "x",
      "include_stop_str_in_output": true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompts[0].stopping.min_new_tokens(), 8);
  EXPECT_TRUE(c->prompts[0].stopping.include_stop_str_in_output());
  ExpectRefused(Completion(R"({"prompt": "a", "max_tokens": 8, "min_tokens": 9})"),
                "min_tokens: must be an integer in [0, max_tokens] = [0, 8], got 9", "");
  // Completions' default max_tokens is 16.
  ExpectRefused(Completion(R"({"prompt": "a", "min_tokens": 17})"), "min_tokens: must be an integer in [0, max_tokens]",
                "");
  ExpectRefused(Completion(R"({"prompt": "a", "max_tokens": 0, "echo": true, "min_tokens": 1})"),
                "min_tokens: must be an integer in [0, max_tokens] = [0, 0], got 1", "");
  ExpectRefused(Chat(WithField("min_tokens", "-1")), "min_tokens: must be an integer in [0, 16777216], got -1", "");
  ExpectRefused(Chat(WithField("max_completion_tokens", R"(2, "min_tokens": 3)")),
                "min_tokens: must be an integer in [0, max_tokens] = [0, 2], got 3", "");
  ExpectRefused(Chat(WithField("include_stop_str_in_output", "1")),
                "include_stop_str_in_output: must be a boolean, got number", "");
}

TEST(OpenAiRequest, WorkerErrorsNameTheParameterAsSent) {
  auto rename = [](std::string_view message, std::string_view param) {
    return Msg(ClientFieldError(absl::InvalidArgumentError(absl::string_view(message.data(), message.size())), param));
  };
  EXPECT_EQ(rename("worker group 127.0.0.1:5: sampling.constraint.json_schema: at line 1 column 9: bad type",
                   "response_format"),
            "response_format: at line 1 column 9: bad type");
  EXPECT_EQ(rename("sampling.constraint.regex: unbalanced ( at position 3", "guided_regex"),
            "guided_regex: unbalanced ( at position 3");
  EXPECT_EQ(rename("sampling.constraint.choice.choices[3]: 70000 bytes, at most 65536", "guided_choice"),
            "guided_choice[3]: 70000 bytes, at most 65536");
  EXPECT_EQ(rename("sampling.constraint.choice.choices: 0 strings, 1 to 256", "guided_choice"),
            "guided_choice: 0 strings, 1 to 256");
  EXPECT_EQ(rename("sampling.constraint: compiling took longer than 10 s", "guided_grammar"),
            "guided_grammar: compiling took longer than 10 s");
  EXPECT_EQ(rename("sampling.logit_bias[51200]: past the vocabulary (51200 ids)", ""),
            "logit_bias.51200: past the vocabulary (51200 ids)");
  EXPECT_EQ(rename("sampling.logit_bias: 2000 entries, at most 1024", ""), "logit_bias: 2000 entries, at most 1024");
  EXPECT_EQ(rename("stopping.min_new_tokens: 9 is more than max_new_tokens 8", ""),
            "min_tokens: 9 is more than max_new_tokens 8");
  // Nothing to rename: unchanged.
  EXPECT_EQ(rename("sampling.temperature: 300 is outside [0, 100]", "guided_regex"),
            "sampling.temperature: 300 is outside [0, 100]");
  EXPECT_EQ(rename("sampling.constraint.regex: bad", ""), "sampling.constraint.regex: bad");
  const absl::Status other = absl::UnavailableError("sampling.constraint.regex: x");
  EXPECT_EQ(ClientFieldError(other, "guided_regex"), other);
}

// ---- every field x every wrong JSON type ----

struct FieldCase {
  std::string name;                // the parameter, as the error must start
  std::string body;                // with $ where the value goes
  std::set<std::string> accepted;  // values of kValues that are valid for it
  enum Endpoint { kChat, kCompletion, kTokenize, kDetokenize } endpoint = kChat;
  std::set<std::string> skip = {};  // values refused under another name
};

// clang-format off
const std::vector<std::string> kValues = {
    "null", "true", "1", "1.5", "-1", "18446744073709551616", "\"s\"", "[]", "[1]", "{}", "{\"a\":1}"};
// clang-format on

std::string Substitute(const std::string& body, const std::string& value) {
  std::string out = body;
  out.replace(out.find('$'), 1, value);
  return out;
}

std::vector<FieldCase> AllFields() {
  std::vector<FieldCase> cases;
  const std::string chat = std::string("{\"messages\": ") + kUserMsg + ", \"%\": $}";
  const std::string completion = "{\"prompt\": \"x\", \"%\": $}";
  auto top = [&](FieldCase::Endpoint e, const std::string& name, std::set<std::string> ok) {
    std::string body = e == FieldCase::kChat ? chat : completion;
    body.replace(body.find('%'), 1, name);
    ok.insert("null");  // null = absent for every optional field
    cases.push_back({name, body, std::move(ok), e});
  };
  for (auto e : {FieldCase::kChat, FieldCase::kCompletion}) {
    top(e, "model", {"\"s\""});
    top(e, "user", {"\"s\""});
    top(e, "temperature", {"1", "1.5"});
    top(e, "top_p", {"1"});
    top(e, "top_k", {"1", "-1"});
    top(e, "min_p", {"1"});
    top(e, "repetition_penalty", {"1", "1.5"});
    top(e, "presence_penalty", {"1", "1.5", "-1"});
    top(e, "frequency_penalty", {"1", "1.5", "-1"});
    top(e, "seed", {"1", "-1"});
    top(e, "n", {"1"});
    top(e, "best_of", {"1"});
    top(e, "min_tokens", {"1"});
    top(e, "include_stop_str_in_output", {"true"});
    top(e, "response_format", {});
    top(e, "guided_json", {"{}", "{\"a\":1}"});
    top(e, "guided_regex", {"\"s\""});
    top(e, "guided_grammar", {"\"s\""});
    top(e, "guided_choice", {});
    top(e, "guided_whitespace_pattern", {});
    top(e, "max_tokens", {"1"});
    top(e, "stop", {"\"s\"", "[]"});
    top(e, "stop_token_ids", {"[]", "[1]"});
    top(e, "ignore_eos", {"true"});
    top(e, "stream", {"true"});
    top(e, "stream_options", {});  // an object, but only with stream true
    top(e, "logit_bias", {"{}"});
  }
  top(FieldCase::kChat, "max_completion_tokens", {"1"});
  top(FieldCase::kChat, "logprobs", {"true"});
  top(FieldCase::kChat, "top_logprobs", {"1"});
  top(FieldCase::kChat, "tools", {"[]"});
  top(FieldCase::kChat, "functions", {"[]"});
  top(FieldCase::kChat, "tool_choice", {});
  top(FieldCase::kChat, "function_call", {});
  top(FieldCase::kChat, "parallel_tool_calls", {"true"});
  top(FieldCase::kChat, "service_tier", {});
  top(FieldCase::kChat, "store", {});
  top(FieldCase::kChat, "metadata", {"{}"});
  top(FieldCase::kChat, "modalities", {});
  top(FieldCase::kCompletion, "echo", {"true"});
  top(FieldCase::kCompletion, "logprobs", {"1"});
  top(FieldCase::kCompletion, "suffix", {});
  // Required fields and nested ones.
  cases.push_back({"messages", "{\"messages\": $}", {}});
  cases.push_back({"messages[0]", "{\"messages\": [$]}", {}});
  cases.push_back({"messages[0].role", R"({"messages": [{"role": $, "content": "x"}]})", {}});
  cases.push_back({"messages[0].content", R"({"messages": [{"role": "user", "content": $}]})", {"\"s\"", "[]"}});
  cases.push_back({"messages[0].name", R"({"messages": [{"role": "user", "content": "x", "name": $}]})", {"null"}});
  cases.push_back({"messages[0].tool_calls",
                   R"({"messages": [{"role": "user", "content": "x", "tool_calls": $}]})",
                   {"null", "[]"}});
  cases.push_back({"messages[0].content[0]", R"({"messages": [{"role": "user", "content": [$]}]})", {}});
  cases.push_back({"messages[0].content[0].type",
                   R"({"messages": [{"role": "user", "content": [{"type": $, "text": "x"}]}]})",
                   {}});
  cases.push_back({"messages[0].content[0].text",
                   R"({"messages": [{"role": "user", "content": [{"type": "text", "text": $}]}]})",
                   {"\"s\""}});
  cases.push_back(
      {"stream_options.include_usage",
       std::string("{\"messages\": ") + kUserMsg + R"(, "stream": true, "stream_options": {"include_usage": $}})",
       {"null", "true"}});
  cases.push_back(
      {"response_format.type", std::string("{\"messages\": ") + kUserMsg + R"(, "response_format": {"type": $}})", {}});
  const std::string schema_format =
      std::string("{\"messages\": ") + kUserMsg + R"(, "response_format": {"type": "json_schema", "json_schema": )";
  cases.push_back({"response_format.json_schema", schema_format + "$}}", {}});
  cases.push_back({"response_format.json_schema.name", schema_format + R"({"name": $, "schema": {}}}})", {"\"s\""}});
  cases.push_back({"response_format.json_schema.schema", schema_format + R"({"name": "n", "schema": $}}})",
                   {"null", "{}", "{\"a\":1}"}});
  cases.push_back({"response_format.json_schema.strict", schema_format + R"({"name": "n", "strict": $}}})",
                   {"null", "true"}});
  cases.push_back({"response_format.json_schema.description",
                   schema_format + R"({"name": "n", "description": $}}})",
                   {"null", "\"s\""}});
  cases.push_back({"logit_bias.5", std::string("{\"messages\": ") + kUserMsg + R"(, "logit_bias": {"5": $}})",
                   {"1", "1.5", "-1"}});
  cases.push_back({"guided_choice[0]", std::string("{\"messages\": ") + kUserMsg + R"(, "guided_choice": [$]})",
                   {"\"s\""}});
  cases.push_back({"guided_choice[1]", R"({"prompt": "x", "guided_choice": ["a", $]})", {"\"s\""},
                   FieldCase::kCompletion});
  cases.push_back({"prompt", "{\"prompt\": $}", {"\"s\"", "[1]"}, FieldCase::kCompletion});
  cases.push_back({"prompt[0]", "{\"prompt\": [$]}", {"\"s\"", "1", "[1]"}, FieldCase::kCompletion});
  cases.push_back({"prompt[1]", "{\"prompt\": [\"a\", $]}", {"\"s\""}, FieldCase::kCompletion});
  cases.push_back({"prompt[1]", "{\"prompt\": [7, $]}", {"1"}, FieldCase::kCompletion});
  cases.push_back({"prompt[1]", "{\"prompt\": [[7], $]}", {"[1]"}, FieldCase::kCompletion});
  cases.push_back({"prompt[0][0]", "{\"prompt\": [[$]]}", {"1"}, FieldCase::kCompletion});
  cases.push_back({"prompt", "{\"prompt\": $}", {"\"s\""}, FieldCase::kTokenize});
  cases.push_back({"model", "{\"prompt\": \"x\", \"model\": $}", {"null", "\"s\""}, FieldCase::kTokenize});
  cases.push_back(
      {"add_special_tokens", "{\"prompt\": \"x\", \"add_special_tokens\": $}", {"null", "true"}, FieldCase::kTokenize});
  cases.push_back(
      {"return_token_strs", "{\"prompt\": \"x\", \"return_token_strs\": $}", {"null", "true"}, FieldCase::kTokenize});
  // {"messages": null} is {}: "prompt: exactly one of prompt or messages is required".
  cases.push_back({"messages", "{\"messages\": $}", {}, FieldCase::kTokenize, {"null"}});
  cases.push_back({"add_generation_prompt",
                   std::string("{\"messages\": ") + kUserMsg + ", \"add_generation_prompt\": $}",
                   {"null", "true"},
                   FieldCase::kTokenize});
  cases.push_back({"tokens", "{\"tokens\": $}", {"[]", "[1]"}, FieldCase::kDetokenize});
  cases.push_back({"tokens[0]", "{\"tokens\": [$]}", {"1"}, FieldCase::kDetokenize});
  cases.push_back({"model", "{\"tokens\": [1], \"model\": $}", {"null", "\"s\""}, FieldCase::kDetokenize});
  return cases;
}

TEST(OpenAiRequest, EveryFieldRefusesEveryWrongType) {
  int refused = 0, accepted = 0;
  for (const FieldCase& c : AllFields()) {
    for (const std::string& value : kValues) {
      const std::string body = Substitute(c.body, value);
      absl::Status s;
      switch (c.endpoint) {
        case FieldCase::kChat: s = Chat(body); break;
        case FieldCase::kCompletion: s = Completion(body); break;
        case FieldCase::kTokenize: s = Tokenize(body); break;
        case FieldCase::kDetokenize: s = Detokenize(body); break;
      }
      if (c.skip.count(value)) {
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << body << " -> " << s;
        continue;
      }
      if (c.accepted.count(value)) {
        EXPECT_TRUE(s.ok()) << body << " -> " << s;
        ++accepted;
        continue;
      }
      ++refused;
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << body << " -> " << s;
      // The field's name, then ':' (or a part of it: '.', '[').
      const std::string m = Msg(s);
      EXPECT_TRUE(m.size() > c.name.size() && m.compare(0, c.name.size(), c.name) == 0 &&
                  (m[c.name.size()] == ':' || m[c.name.size()] == '.' || m[c.name.size()] == '['))
          << body << " -> " << m;
    }
  }
  EXPECT_GT(refused, 800);
  EXPECT_GT(accepted, 130);
}

}  // namespace
}  // namespace phi::gateway
