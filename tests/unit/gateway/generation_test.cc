// The generation core through the gRPC front end, against the fake worker: stop strings and
// the tokens they count, include_stop_str_in_output, min_new_tokens, the checks of the
// sampling surface's fields, and n / best_of (choice_group.h).
#include <gtest/gtest.h>

#include <map>

#include "tests/unit/gateway/chat_service_fixture.h"

namespace phi::gateway {
namespace {

using testing::ChatServiceTest;
using testing::FakeWorker;

using GenerationTest = ChatServiceTest;

std::string LogprobText(const google::protobuf::RepeatedPtrField<phi::v1::PositionLogprobs>& lps) {
  std::string t;
  for (const auto& p : lps) t += p.token().text();
  return t;
}

// Regression: a stop string completed in the middle of a multi-token worker message counted
// (and returned logprobs for) every token of the message, and of any message read with it.
TEST_F(GenerationTest, StopStringUsageAndLogprobsEndAtTheStopToken) {
  Start();
  workers_[0]->tokens_per_message = 5;  // "hello", " worl", "d STO", "P mor", ...
  for (int per_message : {5, 1, 3}) {
    workers_[0]->tokens_per_message = per_message;
    auto req = Hello();
    req.mutable_stopping()->add_stop("STOP");
    req.set_logprobs(true);
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    ASSERT_TRUE(stub_->Chat(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.text(), "hello world ");
    EXPECT_EQ(resp.finish_reason(), phi::v1::FINISH_REASON_STOP_STRING);
    // "hello world STOP": the 16th token completes the stop string.
    EXPECT_EQ(resp.usage().completion_tokens(), 16) << per_message << " tokens per message";
    EXPECT_EQ(resp.logprobs_size(), 16);
    EXPECT_EQ(LogprobText(resp.logprobs()), "hello world STOP");

    phi::v1::ChatStreamResponse last;
    grpc::Status st;
    grpc::ClientContext sctx;
    auto reader = stub_->ChatStream(&sctx, req);
    std::string text, lp_text;
    phi::v1::ChatStreamResponse m;
    while (reader->Read(&m)) {
      text += m.text_delta();
      lp_text += LogprobText(m.logprobs());
      last = m;
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(text, "hello world ");
    EXPECT_EQ(lp_text, "hello world STOP");
    EXPECT_EQ(last.usage().completion_tokens(), 16);
  }
}

TEST_F(GenerationTest, IncludeStopStrInOutput) {
  Start();
  workers_[0]->tokens_per_message = 4;
  auto req = Hello();
  req.mutable_stopping()->add_stop("STOP");
  req.mutable_stopping()->set_include_stop_str_in_output(true);
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  ASSERT_TRUE(stub_->Chat(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.text(), "hello world STOP");
  EXPECT_EQ(resp.finish_reason(), phi::v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(resp.usage().completion_tokens(), 16);
}

TEST_F(GenerationTest, MinNewTokensKeepsEarlyStopStringsFromEnding) {
  Start();
  for (int per_message : {1, 4}) {
    workers_[0]->tokens_per_message = per_message;
    auto req = Hello();
    req.mutable_stopping()->add_stop("o");
    grpc::ClientContext c1;
    phi::v1::ChatResponse r1;
    ASSERT_TRUE(stub_->Chat(&c1, req, &r1).ok());
    EXPECT_EQ(r1.text(), "hell");
    EXPECT_EQ(r1.usage().completion_tokens(), 5);
    // The "o" of "hello" is token 5: with min_new_tokens 6 it cannot stop; "world"'s can (8).
    req.mutable_stopping()->set_min_new_tokens(6);
    grpc::ClientContext c2;
    phi::v1::ChatResponse r2;
    ASSERT_TRUE(stub_->Chat(&c2, req, &r2).ok());
    EXPECT_EQ(r2.text(), "hello w") << per_message;
    EXPECT_EQ(r2.usage().completion_tokens(), 8);
    EXPECT_EQ(r2.finish_reason(), phi::v1::FINISH_REASON_STOP_STRING);
    // The worker gets min_new_tokens (it holds back eos and stop ids itself).
    std::lock_guard<std::mutex> l(workers_[0]->mu);
    EXPECT_EQ(workers_[0]->last_request.stopping().min_new_tokens(), 6);
  }
}

TEST_F(GenerationTest, SamplingSurfaceRefusedByName) {
  Start();
  auto expect = [&](phi::v1::ChatRequest req, const std::string& needle, bool stream = false) {
    grpc::Status s;
    if (stream) {
      phi::v1::ChatStreamResponse last;
      StreamText(req, &last, &s);
    } else {
      grpc::ClientContext ctx;
      phi::v1::ChatResponse resp;
      s = stub_->Chat(&ctx, req, &resp);
    }
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << needle;
    EXPECT_NE(s.error_message().find(needle), std::string::npos) << s.error_message();
  };
  auto r = Hello();
  (*r.mutable_sampling()->mutable_logit_bias())[50] = 150;
  expect(r, "sampling.logit_bias[50]: 150 is outside [-100, 100]");
  r = Hello();
  (*r.mutable_sampling()->mutable_logit_bias())[-3] = 1;
  expect(r, "sampling.logit_bias[-3]: negative token id");
  r = Hello();
  (*r.mutable_sampling()->mutable_logit_bias())[300] = 1;  // the fake model's vocabulary is 300
  expect(r, "sampling.logit_bias[300]: token id outside [0, 300)");
  r = Hello();
  r.mutable_sampling()->set_top_k(301);  // top_k's bound is the vocabulary too (as the worker's)
  expect(r, "sampling.top_k: 301 is outside [0, 300]");
  r = Hello();
  r.mutable_sampling()->set_repetition_penalty(10.5f);
  expect(r, "sampling.repetition_penalty: 10.5 is outside (0, 10]");
  r = Hello();
  for (int i = 0; i < 1025; ++i) (*r.mutable_sampling()->mutable_logit_bias())[i] = 1;
  expect(r, "sampling.logit_bias: 1025 entries, at most 1024");
  r = Hello();
  r.mutable_sampling()->mutable_constraint()->set_json_schema(R"({"type": })");
  expect(r, "sampling.constraint.json_schema: not JSON at offset 9: ");
  r = Hello();
  r.mutable_sampling()->mutable_constraint()->set_json_schema("[1, 2]");
  expect(r, "sampling.constraint.json_schema: a schema is a JSON object");
  r = Hello();
  r.mutable_sampling()->mutable_constraint()->set_regex(std::string(65537, 'a'));
  expect(r, "sampling.constraint.regex: 65537 bytes, at most 65536");
  r = Hello();
  r.mutable_sampling()->mutable_constraint()->set_grammar("");
  expect(r, "sampling.constraint.grammar: empty");
  r = Hello();
  r.mutable_sampling()->mutable_constraint()->mutable_choice();
  expect(r, "sampling.constraint.choice.choices: 0 strings, 1 to 256");
  r = Hello();
  r.mutable_stopping()->set_min_new_tokens(-1);
  expect(r, "stopping.min_new_tokens: -1 is outside [0, max_new_tokens");
  r = Hello();
  r.mutable_stopping()->set_max_new_tokens(10);
  r.mutable_stopping()->set_min_new_tokens(11);
  expect(r, "stopping.min_new_tokens: 11 is outside [0, max_new_tokens = 10]");
  r = Hello();
  r.set_n(17);
  expect(r, "n: 17 is outside [1, 16]");
  r = Hello();
  r.set_n(4);
  r.set_best_of(2);
  expect(r, "best_of: 2 is outside [n, 16] = [4, 16]");
  r = Hello();
  r.set_best_of(3);
  expect(r, "best_of: 3 > n = 1", /*stream=*/true);
  EXPECT_EQ(workers_[0]->generates.load(), 0);  // none reached the worker
}

// The worker's INVALID_ARGUMENT (a constraint that does not compile) reaches the client as
// it is, and is not retried on another group.
TEST_F(GenerationTest, WorkerInvalidArgumentIsNotRetried) {
  Start(2);
  for (auto& w : workers_) w->refuse_seed = 5;
  auto req = Hello();
  req.mutable_sampling()->set_seed(5);
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  grpc::Status s = stub_->Chat(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "sampling.constraint.json_schema: bad at offset 17");
  EXPECT_EQ(workers_[0]->generates + workers_[1]->generates, 1);
}

TEST_F(GenerationTest, NChoicesAreSeededSamplesOnOneGroup) {
  Start(2);
  for (auto& w : workers_) w->seeded_reply = true;
  auto req = Hello();
  req.mutable_sampling()->set_seed(100);
  req.set_n(4);
  req.set_logprobs(true);
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  ASSERT_TRUE(stub_->Chat(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.choices_size(), 4);
  const std::string reply = "hello world STOP more text";
  for (int i = 0; i < 4; ++i) {
    const phi::v1::Choice& c = resp.choices(i);
    EXPECT_EQ(c.index(), i);
    EXPECT_EQ(c.text(), reply + static_cast<char>('0' + (100 + i) % 10));
    EXPECT_EQ(c.seed(), 100u + i);
    EXPECT_EQ(c.finish_reason(), phi::v1::FINISH_REASON_STOP);
    EXPECT_EQ(LogprobText(c.logprobs()), c.text());
  }
  EXPECT_EQ(resp.text(), resp.choices(0).text());
  EXPECT_EQ(resp.seed(), 100u);
  EXPECT_EQ(resp.usage().completion_tokens(), 4 * 27);
  EXPECT_EQ(resp.usage().prompt_tokens(), 21);
  // All on one group (the worker shares their prefill), request ids <id>-<i>.
  EXPECT_TRUE(workers_[0]->generates == 4 || workers_[1]->generates == 4);
  // Choice i is what a single request with seed 100 + i gives.
  for (int i = 0; i < 4; ++i) {
    auto one = Hello();
    one.mutable_sampling()->set_seed(100 + i);
    grpc::ClientContext c;
    phi::v1::ChatResponse r;
    ASSERT_TRUE(stub_->Chat(&c, one, &r).ok());
    EXPECT_EQ(r.text(), resp.choices(i).text());
    EXPECT_EQ(r.choices_size(), 0);  // n = 1: no choices list
  }
}

TEST_F(GenerationTest, NChoicesStreamWithTheirIndex) {
  Start();
  workers_[0]->seeded_reply = true;
  workers_[0]->tokens_per_message = 3;
  auto req = Hello();
  req.mutable_sampling()->set_seed(20);
  req.mutable_stopping()->add_stop("STOP");
  req.set_n(3);
  req.set_request_id("abc");
  grpc::ClientContext ctx;
  auto reader = stub_->ChatStream(&ctx, req);
  std::map<int, std::string> text;
  std::map<int, phi::v1::FinishReason> finish;
  std::map<int, uint64_t> seed;
  phi::v1::ChatStreamResponse m, last;
  while (reader->Read(&m)) {
    ASSERT_GE(m.index(), 0);
    ASSERT_LT(m.index(), 3);
    text[m.index()] += m.text_delta();
    if (m.finish_reason() != phi::v1::FINISH_REASON_UNSPECIFIED) {
      EXPECT_FALSE(finish.contains(m.index()));
      finish[m.index()] = m.finish_reason();
      seed[m.index()] = m.seed();
    }
    last = m;
  }
  ASSERT_TRUE(reader->Finish().ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(text[i], "hello world ");
    EXPECT_EQ(finish[i], phi::v1::FINISH_REASON_STOP_STRING);
    EXPECT_EQ(seed[i], 20u + i);
  }
  EXPECT_EQ(last.usage().completion_tokens(), 3 * 16);
  EXPECT_EQ(last.request_id(), "abc");
  std::lock_guard<std::mutex> l(workers_[0]->mu);
  EXPECT_TRUE(workers_[0]->last_request.request_id().starts_with("abc-"));
}

TEST_F(GenerationTest, BestOfReturnsTheHighestCumulativeLogprob) {
  Start();
  workers_[0]->seeded_reply = true;
  auto req = Hello();
  // Seeds 102..105: per-token logprob -0.3, -0.4, -0.5, -0.1: best 105, then 102.
  req.mutable_sampling()->set_seed(102);
  req.set_n(2);
  req.set_best_of(4);
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  ASSERT_TRUE(stub_->Chat(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.choices_size(), 2);
  const std::string reply = "hello world STOP more text";
  EXPECT_EQ(resp.choices(0).seed(), 105u);
  EXPECT_EQ(resp.choices(0).text(), reply + "5");
  EXPECT_EQ(resp.choices(0).index(), 0);
  EXPECT_EQ(resp.choices(1).seed(), 102u);
  EXPECT_EQ(resp.choices(1).text(), reply + "2");
  EXPECT_EQ(resp.choices(1).index(), 1);
  EXPECT_EQ(resp.text(), reply + "5");
  // Logprobs were asked for by the ranking only.
  EXPECT_EQ(resp.choices(0).logprobs_size(), 0);
  EXPECT_EQ(resp.logprobs_size(), 0);
  EXPECT_EQ(resp.usage().completion_tokens(), 4 * 27);  // every generated choice
  EXPECT_EQ(workers_[0]->generates.load(), 4);
  // best_of alone (n = 1) returns one choice, the best.
  req.set_n(1);
  grpc::ClientContext c2;
  ASSERT_TRUE(stub_->Chat(&c2, req, &resp).ok());
  EXPECT_EQ(resp.text(), reply + "5");
  EXPECT_EQ(resp.seed(), 105u);
}

TEST_F(GenerationTest, OneChoiceFailingFailsTheRequestAndCancelsTheOthers) {
  Start();
  workers_[0]->token_delay_ms = 20;
  workers_[0]->refuse_seed = 9;
  auto req = Hello();
  req.mutable_sampling()->set_seed(7);
  req.set_n(4);  // seeds 7, 8, 9, 10
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  grpc::Status s = stub_->Chat(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "sampling.constraint.json_schema: bad at offset 17");
  EXPECT_TRUE(Eventually([&] { return workers_[0]->running.load() == 0; }));
  // Every other choice that reached the worker was cancelled there (one may be cancelled
  // before its call started).
  EXPECT_GE(workers_[0]->cancelled.load(), 2);
  EXPECT_EQ(workers_[0]->cancelled.load(), workers_[0]->generates.load() - 1);
  EXPECT_TRUE(Eventually([&] { return generations_->active() == 0; }));
}

TEST_F(GenerationTest, CancellingTheClientCancelsEveryChoice) {
  Start();
  workers_[0]->token_delay_ms = 50;
  auto req = Hello();
  req.set_n(3);
  grpc::ClientContext ctx;
  auto reader = stub_->ChatStream(&ctx, req);
  phi::v1::ChatStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  ctx.TryCancel();
  reader->Finish();
  EXPECT_TRUE(Eventually([&] { return workers_[0]->running.load() == 0; }));
  EXPECT_EQ(workers_[0]->cancelled.load(), 3);
  EXPECT_TRUE(Eventually([&] { return generations_->active() == 0; }));
}

TEST_F(GenerationTest, CompleteWithNAndPromptLogprobs) {
  Start();
  workers_[0]->seeded_reply = true;
  phi::v1::CompleteRequest req;
  req.set_prompt("abc");
  req.set_n(2);
  req.set_echo(true);
  req.set_prompt_logprobs(true);
  req.mutable_sampling()->set_seed(3);
  req.mutable_stopping()->set_max_new_tokens(5);
  grpc::ClientContext ctx;
  phi::v1::CompleteResponse resp;
  ASSERT_TRUE(stub_->Complete(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.choices_size(), 2);
  EXPECT_EQ(resp.choices(0).text(), "abchello");
  EXPECT_EQ(resp.choices(1).text(), "abchello");
  EXPECT_EQ(resp.choices(1).finish_reason(), phi::v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(resp.prompt_logprobs_size(), 2);  // once, not per choice
  EXPECT_EQ(resp.usage().completion_tokens(), 10);
  EXPECT_EQ(resp.usage().prompt_tokens(), 3);
}

TEST_F(GenerationTest, ChoicesShareOneEncodeAndCountOneRequest) {
  Start();
  const int encodes = tokenizer_.encodes.load();
  auto req = Hello();
  req.set_n(5);
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  ASSERT_TRUE(stub_->Chat(&ctx, req, &resp).ok());
  EXPECT_EQ(tokenizer_.encodes.load() - encodes, 1);
  EXPECT_EQ(Metric("phi_gateway_prompt_tokens_total{model=\"fake-model\"}"), 21);
  EXPECT_EQ(Metric("phi_gateway_completion_tokens_total{model=\"fake-model\"}"), 5 * 26);
  EXPECT_EQ(Metric("phi_gateway_time_to_first_token_seconds_count{model=\"fake-model\"}"), 1);
}

class GenerationDefaultsTest : public GenerationTest {
 protected:
  // The worker's view of `req` (Chat, or ChatStream), and the reply's completion tokens.
  phi::v1::GenerateRequest Sent(const phi::v1::ChatRequest& req, int32_t* completion_tokens = nullptr) {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    grpc::Status s = stub_->Chat(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (completion_tokens) *completion_tokens = resp.usage().completion_tokens();
    std::lock_guard<std::mutex> l(workers_[0]->mu);
    return workers_[0]->last_request;
  }
};

TEST_F(GenerationDefaultsTest, UnsetTemperatureAndMaxNewTokensGetTheModelDefaults) {
  Start();
  ServeModelDefaults(0.7f, 7);
  int32_t tokens = 0;
  phi::v1::GenerateRequest sent = Sent(Hello(), &tokens);
  EXPECT_TRUE(sent.sampling().has_temperature());
  EXPECT_EQ(sent.sampling().temperature(), 0.7f);
  EXPECT_EQ(sent.stopping().max_new_tokens(), 7);
  EXPECT_EQ(tokens, 7);  // the fake's reply is 26 tokens

  // Stated fields win: an explicit 0 stays greedy.
  auto req = Hello();
  req.mutable_sampling()->set_temperature(0);
  req.mutable_stopping()->set_max_new_tokens(3);
  sent = Sent(req, &tokens);
  EXPECT_TRUE(sent.sampling().has_temperature());
  EXPECT_EQ(sent.sampling().temperature(), 0.0f);
  EXPECT_EQ(sent.stopping().max_new_tokens(), 3);
  EXPECT_EQ(tokens, 3);

  // Every choice samples at the model's temperature.
  req = Hello();
  req.set_n(2);
  EXPECT_EQ(Sent(req).sampling().temperature(), 0.7f);

  // min_new_tokens is checked against the resolved default.
  req = Hello();
  req.mutable_stopping()->set_min_new_tokens(8);
  grpc::ClientContext ctx;
  phi::v1::ChatResponse resp;
  grpc::Status s = stub_->Chat(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "stopping.min_new_tokens: 8 is outside [0, max_new_tokens = 7]");
}

TEST_F(GenerationDefaultsTest, WithoutModelDefaultsUnsetIsGreedyAnd256) {
  Start();
  phi::v1::GenerateRequest sent = Sent(Hello());
  EXPECT_TRUE(sent.sampling().has_temperature());
  EXPECT_EQ(sent.sampling().temperature(), 0.0f);
  EXPECT_EQ(sent.stopping().max_new_tokens(), 256 - 21);  // the fake's context, less the prompt
  // A model default past the context is clamped to it.
  ServeModelDefaults(1.0f, 1000);
  sent = Sent(Hello());
  EXPECT_EQ(sent.sampling().temperature(), 1.0f);
  EXPECT_EQ(sent.stopping().max_new_tokens(), 256 - 21);
}

TEST_F(GenerationDefaultsTest, OperatorDefaultMaxNewTokensOverridesTheModel) {
  gen_options_.default_max_new_tokens = 5;
  Start();
  ServeModelDefaults(0.7f, 7);
  int32_t tokens = 0;
  EXPECT_EQ(Sent(Hello(), &tokens).stopping().max_new_tokens(), 5);
  EXPECT_EQ(tokens, 5);
}

}  // namespace
}  // namespace phi::gateway
