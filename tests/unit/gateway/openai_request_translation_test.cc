// OpenAI request bodies -> GenerateParams: what each endpoint's fields become.
#include "services/gateway/openai_request.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "tests/unit/gateway/openai_request_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::openai_test;  // NOLINT: the parsers' test helpers

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

}  // namespace
}  // namespace phi::gateway
