// The engine against a runner whose logits are a pure function of the token history read
// back from its paged cache (fake_model_runner.h): outputs must equal a plain reference loop,
// whatever else is in the batch, whatever the cache pressure.
#include "services/worker/engine/engine.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/worker/engine/engine_test_util.h"
#include "tests/unit/worker/engine/fake_model_runner.h"

namespace phi::worker {
namespace {

using testing::Completion;
using testing::FakeModelRunner;

constexpr int32_t kEos = 3;

// What a request must produce: sample from the runner's pure logits, token by token.
std::vector<int32_t> Reference(const FakeModelRunner& runner, const GenerationRequest& r, int32_t max_new,
                               FinishReason* reason = nullptr) {
  std::vector<int32_t> history = r.prompt, out;
  PenaltyHistory penalties;
  penalties.AddPrompt(r.prompt);
  SamplingOptions o = r.sampling;
  o.seed = r.seed.value_or(0);
  for (int32_t step = 0; step < max_new; ++step) {
    const std::vector<float> l = runner.LogitsAfter(history);
    const int32_t t = SampleToken(l, runner.shape().vocab_size, o, step,
                                  o.has_penalties() ? &penalties : nullptr, false, 0)
                          .token_id;
    const bool stop = (!r.stopping.ignore_eos && t == kEos) ||
                      std::count(r.stopping.stop_token_ids.begin(), r.stopping.stop_token_ids.end(), t) > 0;
    if (stop) {
      if (reason) *reason = FinishReason::kStop;
      return out;
    }
    out.push_back(t);
    history.push_back(t);
    penalties.AddOutput(t);
  }
  if (reason) *reason = FinishReason::kLength;
  return out;
}

struct Harness {
  explicit Harness(EngineOptions o = {}, int32_t context = 512) : runner(64, 60, context) {
    o.eos_token_ids = {kEos};
    o.registry = &registry;
    engine = std::move(Engine::Create(&runner, o)).value();
  }
  metrics::Registry registry;
  FakeModelRunner runner;
  std::unique_ptr<Engine> engine;
};

GenerationRequest Greedy(std::vector<int32_t> prompt, int32_t max_new, bool ignore_eos = true) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.stopping.max_new_tokens = max_new;
  r.stopping.ignore_eos = ignore_eos;
  return r;
}

GenerationRequest Sampled(std::vector<int32_t> prompt, int32_t max_new, uint64_t seed) {
  GenerationRequest r = Greedy(std::move(prompt), max_new);
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.9f;
  r.sampling.top_k = 20;
  r.sampling.min_p = 0.02f;
  r.sampling.repetition_penalty = 1.1f;
  r.sampling.presence_penalty = 0.2f;
  r.sampling.frequency_penalty = 0.1f;
  r.seed = seed;
  return r;
}

TEST(EngineTest, GreedyRequestMatchesTheReferenceLoop) {
  Harness h;
  GenerationRequest r = Greedy({5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22}, 30);
  r.logprobs = true;
  r.top_logprobs = 3;
  auto c = testing::RunOne(*h.engine, r);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tokens, Reference(h.runner, r, 30));
  EXPECT_EQ(c->last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(c->last.prompt_tokens, 18);
  EXPECT_EQ(c->last.completion_tokens, 30);
  ASSERT_EQ(c->logprobs.size(), 30u);
  for (const auto& lp : c->logprobs) {
    EXPECT_LE(lp.token.logprob, 0.0f);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].token_id, lp.token.token_id);  // greedy: the chosen one is the top one
  }
  EXPECT_GE(c->last.timings.total_seconds, c->last.timings.time_to_first_token_seconds);
}

// The fake model has 64 output rows and a 60-id tokenizer, like Phi-1.5's 51,200 rows and
// 50,295 ids. Logprobs (generated, top and prompt) are transformers' log_softmax over all 64
// rows, and greedy is the argmax over all rows: a padding id (60..63) is chosen and listed
// when its logit is the largest, as HF's greedy does.
TEST(EngineTest, LogprobsAndGreedyCoverPaddingRows) {
  Harness h;
  ASSERT_LT(h.runner.shape().tokenizer_vocab_size, h.runner.shape().vocab_size);
  const int32_t tok_size = h.runner.shape().tokenizer_vocab_size;
  // log_softmax(l)[id] and argmax(l) computed here, independently of the sampler.
  auto log_softmax = [](const std::vector<float>& l, int32_t id) {
    double m = -INFINITY, s = 0;
    for (float v : l) m = std::max<double>(m, v);
    for (float v : l) s += std::exp(v - m);
    return static_cast<float>(l[id] - (m + std::log(s)));
  };
  std::mt19937_64 rng(21);
  int padded_chosen = 0, padded_listed = 0, padded_scored = 0;
  for (int i = 0; i < 8; ++i) {
    GenerationRequest r = Greedy(testing::RandomPrompt(rng, 2, 30, tok_size), 24);
    r.logprobs = true;
    r.top_logprobs = 5;
    r.prompt_logprobs = true;
    auto c = testing::RunOne(*h.engine, r);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_EQ(c->tokens.size(), 24u);
    ASSERT_EQ(c->logprobs.size(), 24u);
    std::vector<int32_t> history = r.prompt;
    for (size_t k = 0; k < c->tokens.size(); ++k) {
      const std::vector<float> l = h.runner.LogitsAfter(history);
      const int32_t argmax = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
      ASSERT_EQ(c->tokens[k], argmax) << "request " << i << " token " << k;
      EXPECT_NEAR(c->logprobs[k].token.logprob, log_softmax(l, argmax), 1e-5);
      ASSERT_EQ(c->logprobs[k].top.size(), 5u);
      for (const TokenLogprobValue& t : c->logprobs[k].top) {
        EXPECT_NEAR(t.logprob, log_softmax(l, t.token_id), 1e-5);
        padded_listed += t.token_id >= tok_size;
      }
      padded_chosen += argmax >= tok_size;
      history.push_back(argmax);
    }
    ASSERT_EQ(c->prompt_logprobs.size(), r.prompt.size() - 1);
    for (size_t p = 1; p < r.prompt.size(); ++p) {
      const std::vector<float> l = h.runner.LogitsAfter({r.prompt.begin(), r.prompt.begin() + p});
      const PositionLogprob& lp = c->prompt_logprobs[p - 1];
      EXPECT_EQ(lp.token.token_id, r.prompt[p]);
      EXPECT_NEAR(lp.token.logprob, log_softmax(l, r.prompt[p]), 1e-5);
      for (const TokenLogprobValue& t : lp.top) {
        EXPECT_NEAR(t.logprob, log_softmax(l, t.token_id), 1e-5);
        padded_scored += t.token_id >= tok_size;
      }
    }
  }
  EXPECT_GT(padded_chosen, 0);
  EXPECT_GT(padded_listed, 0);
  EXPECT_GT(padded_scored, 0);
}

// With the fake runner: 60 random prompts, random lengths and arrival
// times, greedy and seeded sampling, concurrently == alone.
TEST(EngineTest, BatchInvarianceGreedyAndSeeded) {
  EngineOptions o;
  o.num_kv_blocks = 256;
  o.block_size = 8;
  o.max_batch_tokens = 64;  // small: long prompts are chunked and share steps with decodes
  Harness h(o);
  h.runner.set_step_delay_us(200);
  std::mt19937_64 rng(5);
  std::vector<GenerationRequest> requests;
  std::vector<int> delays;
  for (int i = 0; i < 60; ++i) {
    std::vector<int32_t> p = testing::RandomPrompt(rng, 1, 120, 64);
    const int32_t max_new = 1 + static_cast<int32_t>(rng() % 40);
    requests.push_back(i % 2 == 0 ? Greedy(p, max_new, i % 4 == 0) : Sampled(p, max_new, rng()));
    delays.push_back(static_cast<int>(rng() % 20000));
  }
  std::vector<Completion> together = testing::RunConcurrently(*h.engine, requests, delays);
  EXPECT_GT(h.runner.max_batch(), 4);  // they really shared steps
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i].last.status.ok()) << together[i].last.status;
    auto alone = testing::RunOne(*h.engine, requests[i]);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ(together[i].tokens, alone->tokens) << "request " << i;
    FinishReason reason;
    EXPECT_EQ(alone->tokens, Reference(h.runner, requests[i], requests[i].stopping.max_new_tokens, &reason))
        << "request " << i;
    EXPECT_EQ(alone->last.finish_reason, reason);
  }
}

// A request sharing a prefix reports cached tokens, computes less, and
// gives the same output as without the cache.
TEST(EngineTest, PrefixCacheSkipsPrefillAndKeepsOutput) {
  EngineOptions o;
  o.block_size = 16;
  Harness h(o);
  std::mt19937_64 rng(9);
  const std::vector<int32_t> system = testing::RandomPrompt(rng, 50, 50, 60);
  std::vector<int32_t> p1 = system, p2 = system;
  p1.push_back(1);
  p2.insert(p2.end(), {2, 4, 6});
  auto first = testing::RunOne(*h.engine, Greedy(p1, 10));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->last.cached_prompt_tokens, 0);
  const int64_t before = h.runner.tokens_computed();
  auto second = testing::RunOne(*h.engine, Greedy(p2, 10));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->last.cached_prompt_tokens, 48);  // 3 full blocks of the 50 shared tokens
  EXPECT_EQ(h.runner.tokens_computed() - before, 53 - 48 + 9);
  EXPECT_EQ(second->tokens, Reference(h.runner, Greedy(p2, 10), 10));
  // A conversation re-sent with its answer and one more turn reuses the answer's blocks too.
  std::vector<int32_t> turn2 = p2;
  turn2.insert(turn2.end(), second->tokens.begin(), second->tokens.end());
  turn2.insert(turn2.end(), {7, 8, 9, 10});
  auto third = testing::RunOne(*h.engine, Greedy(turn2, 5));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->last.cached_prompt_tokens, 48);  // 53 + 9 fed = 62 tokens: 3 full blocks
  EXPECT_EQ(third->tokens, Reference(h.runner, Greedy(turn2, 5), 5));
  EngineStatus s = h.engine->Status(100);
  EXPECT_GT(s.prefix_cache_hit_rate, 0.0);
  EXPECT_FALSE(s.cached_block_hashes.empty());
}

// Under a deliberately tiny KV cache every request finishes with the
// output it has without pressure (preemption by recompute, no deadlock).
TEST(EngineTest, TinyKvCachePreemptsButKeepsOutputs) {
  EngineOptions o;
  o.num_kv_blocks = 12;
  o.block_size = 8;  // 96 tokens of cache in all
  o.max_batch_tokens = 32;
  Harness h(o);
  std::mt19937_64 rng(11);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 24; ++i) {
    std::vector<int32_t> p = testing::RandomPrompt(rng, 5, 40, 60);
    requests.push_back(i % 2 ? Greedy(p, 40) : Sampled(p, 40, i));
  }
  std::vector<Completion> together = testing::RunConcurrently(*h.engine, requests, {});
  const std::string text = h.registry.Serialize();
  EXPECT_EQ(text.find("phi_worker_preemptions_total 0\n"), std::string::npos) << "expected preemptions";
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i].last.status.ok()) << together[i].last.status;
    EXPECT_EQ(together[i].tokens, Reference(h.runner, requests[i], 40)) << "request " << i;
  }
  EXPECT_TRUE(testing::WaitIdle(*h.engine));
  EXPECT_EQ(h.engine->Status().kv_blocks_free, 12);
}

// 1,000 requests with random cancellations and client give-ups; blocks
// and gauges return to zero.
TEST(EngineTest, ThousandRequestsWithCancellationsLeaveNothingBehind) {
  EngineOptions o;
  o.num_kv_blocks = 64;
  o.block_size = 8;
  o.max_batch_tokens = 64;
  o.max_waiting = 2000;
  Harness h(o);
  std::vector<std::thread> clients;
  std::atomic<int> finished{0}, cancelled{0};
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 r(13 * 1000 + c);
      for (int i = 0; i < 125; ++i) {
        GenerationRequest req = (i % 2) ? Greedy(testing::RandomPrompt(r, 1, 60, 60), 1 + r() % 30, false)
                                        : Sampled(testing::RandomPrompt(r, 1, 60, 60), 1 + r() % 30, r());
        auto stream = h.engine->Submit(req);
        ASSERT_TRUE(stream.ok()) << stream.status();
        const int mode = static_cast<int>(r() % 4);
        if (mode == 0) {
          (*stream)->Cancel();  // cancelled before or right after admission
        } else if (mode == 1) {
          std::this_thread::sleep_for(std::chrono::microseconds(r() % 2000));
          (*stream)->Cancel();  // mid-stream
        }
        Completion done = testing::Drain(**stream);
        ASSERT_TRUE(done.last.finished);
        if (done.last.finish_reason == FinishReason::kCancelled) ++cancelled;
        ++finished;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(finished.load(), 1000);
  EXPECT_GT(cancelled.load(), 100);
  ASSERT_TRUE(testing::WaitIdle(*h.engine));
  const EngineStatus s = h.engine->Status();
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
  const std::string text = h.registry.Serialize();
  EXPECT_NE(text.find("phi_worker_kv_blocks_used 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("phi_worker_requests_waiting 0\n"), std::string::npos);
  EXPECT_NE(text.find("phi_worker_requests_running 0\n"), std::string::npos);
  EXPECT_NE(text.find("phi_worker_requests_total{finish_reason=\"cancelled\"}"), std::string::npos);
}

TEST(EngineTest, StopsOnEosStopIdsLengthAndContext) {
  Harness h({}, /*context=*/64);
  std::mt19937_64 rng(17);
  // Find a prompt whose greedy continuation hits eos within 50 tokens.
  for (int attempt = 0; attempt < 200; ++attempt) {
    GenerationRequest r = Greedy(testing::RandomPrompt(rng, 3, 10, 60), 50, false);
    FinishReason reason;
    const std::vector<int32_t> ref = Reference(h.runner, r, 50, &reason);
    if (reason != FinishReason::kStop) continue;
    auto c = testing::RunOne(*h.engine, r);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->tokens, ref);
    EXPECT_EQ(c->last.finish_reason, FinishReason::kStop);
    EXPECT_EQ(c->last.completion_tokens, static_cast<int32_t>(ref.size()) + 1);  // eos counted, not sent
    // ignore_eos runs past it.
    r.stopping.ignore_eos = true;
    auto past = testing::RunOne(*h.engine, r);
    ASSERT_TRUE(past.ok());
    EXPECT_EQ(past->tokens.size(), 50u);
    EXPECT_EQ(past->last.finish_reason, FinishReason::kLength);
    // A stop token id stops like eos.
    r.stopping.stop_token_ids = {past->tokens[5]};
    auto stopped = testing::RunOne(*h.engine, r);
    ASSERT_TRUE(stopped.ok());
    EXPECT_EQ(stopped->last.finish_reason, FinishReason::kStop);
    EXPECT_LE(stopped->tokens.size(), 5u);
    // max_new_tokens 0: the default (256) clamped to the context -> context_length.
    r.stopping.stop_token_ids.clear();
    r.stopping.max_new_tokens = 0;
    auto full = testing::RunOne(*h.engine, r);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(full->last.finish_reason, FinishReason::kContextLength);
    EXPECT_EQ(full->tokens.size() + r.prompt.size(), 64u);
    return;
  }
  FAIL() << "no prompt reached eos";
}

TEST(EngineTest, RefusesInvalidRequestsNamingTheField) {
  EngineOptions o;
  o.num_kv_blocks = 8;
  o.block_size = 16;  // 128 tokens of cache; context 512
  Harness h(o);
  auto expect = [&](GenerationRequest r, absl::StatusCode code, const std::string& field) {
    auto s = h.engine->Submit(r);
    ASSERT_FALSE(s.ok()) << field;
    EXPECT_EQ(s.status().code(), code) << s.status();
    EXPECT_NE(s.status().message().find(field), std::string::npos) << s.status();
  };
  expect(Greedy({}, 4), absl::StatusCode::kInvalidArgument, "prompt_ids");
  expect(Greedy({1, 64}, 4), absl::StatusCode::kInvalidArgument, "prompt_ids[1]");
  expect(Greedy({1, -1}, 4), absl::StatusCode::kInvalidArgument, "prompt_ids[1]");
  expect(Greedy(std::vector<int32_t>(512, 1), 1), absl::StatusCode::kInvalidArgument, "prompt_ids");
  expect(Greedy({1}, 512), absl::StatusCode::kInvalidArgument, "stopping.max_new_tokens");
  expect(Greedy({1}, -1), absl::StatusCode::kInvalidArgument, "stopping.max_new_tokens");
  GenerationRequest r = Greedy({1}, 4);
  r.sampling.temperature = -0.5f;
  expect(r, absl::StatusCode::kInvalidArgument, "sampling.temperature");
  r = Greedy({1}, 4);
  r.sampling.top_p = 1.5f;
  expect(r, absl::StatusCode::kInvalidArgument, "sampling.top_p");
  r.sampling.top_p = 0.0f;
  expect(r, absl::StatusCode::kInvalidArgument, "sampling.top_p");
  r = Greedy({1}, 4);
  r.sampling.top_k = 65;
  expect(r, absl::StatusCode::kInvalidArgument, "sampling.top_k");
  r = Greedy({1}, 4);
  r.sampling.min_p = 2;
  expect(r, absl::StatusCode::kInvalidArgument, "sampling.min_p");
  r = Greedy({1}, 4);
  r.sampling.presence_penalty = 3;
  expect(r, absl::StatusCode::kInvalidArgument, "sampling.presence_penalty");
  r = Greedy({1}, 4);
  r.top_logprobs = 21;
  expect(r, absl::StatusCode::kInvalidArgument, "top_logprobs");
  r = Greedy({1}, 4);
  r.stopping.stop_token_ids = {99};
  expect(r, absl::StatusCode::kInvalidArgument, "stopping.stop_token_ids[0]");
  // Fits the context (512) but never the cache (128 tokens).
  expect(Greedy(std::vector<int32_t>(100, 1), 100), absl::StatusCode::kResourceExhausted, "KV blocks");
}

TEST(EngineTest, FullQueueAnswersResourceExhaustedAndDrainingUnavailable) {
  EngineOptions o;
  o.max_waiting = 2;
  o.max_running = 1;
  o.max_batch_tokens = 1;
  Harness h(o);
  h.runner.set_step_delay_us(2000);
  std::vector<std::shared_ptr<RequestStream>> streams;
  absl::Status last;
  for (int i = 0; i < 10 && last.ok(); ++i) {
    auto s = h.engine->Submit(Greedy({1, 2, 3}, 50));
    if (s.ok()) streams.push_back(*s); else last = s.status();
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  for (auto& s : streams) s->Cancel();
  for (auto& s : streams) EXPECT_EQ(testing::Drain(*s).last.finish_reason, FinishReason::kCancelled);
  h.engine->StopAdmitting();
  EXPECT_EQ(h.engine->Submit(Greedy({1}, 1)).status().code(), absl::StatusCode::kUnavailable);
}

TEST(EngineTest, CancelByIdAndUnknownId) {
  Harness h;
  h.runner.set_step_delay_us(1000);
  GenerationRequest r = Greedy({1, 2, 3}, 400);
  r.request_id = "abc";
  auto s = h.engine->Submit(r);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(h.engine->Submit(r).status().code(), absl::StatusCode::kInvalidArgument);  // id in flight
  EXPECT_TRUE(h.engine->Cancel("abc").ok());
  const Completion c = testing::Drain(**s);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(c.tokens.size(), 400u);
  EXPECT_EQ(h.engine->Cancel("nope").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(testing::WaitIdle(*h.engine));
  EXPECT_EQ(h.engine->Status().kv_blocks_free, h.engine->Status().kv_blocks_total);
}

TEST(EngineTest, StepFailureEndsTheBatchWithInternalAndFreesBlocks) {
  std::atomic<int> reported{0};
  EngineOptions o;
  o.on_step_failure = [&](const absl::Status& st) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
    ++reported;
  };
  Harness h(o);
  h.runner.FailNextSteps(1);
  auto c = testing::RunOne(*h.engine, Greedy({1, 2, 3}, 5));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->last.finish_reason, FinishReason::kError);
  EXPECT_EQ(c->last.status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(testing::WaitIdle(*h.engine));
  EXPECT_EQ(h.engine->Status().kv_blocks_free, h.engine->Status().kv_blocks_total);
  EXPECT_EQ(reported.load(), 1);
  auto ok = testing::RunOne(*h.engine, Greedy({1, 2, 3}, 5));  // the engine carries on
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->tokens.size(), 5u);
}

TEST(EngineTest, PromptLogprobsScoreEveryPromptTokenAcrossChunks) {
  EngineOptions o;
  o.max_batch_tokens = 7;  // the prompt is fed in several chunks
  Harness h(o);
  GenerationRequest r = Greedy({4, 8, 15, 16, 23, 42, 7, 9, 11, 13, 2, 5, 6, 1, 0, 33, 34, 35, 36, 37}, 3);
  r.prompt_logprobs = true;
  r.top_logprobs = 2;
  // Prime the prefix cache with the same prompt: prompt logprobs must still be computed.
  ASSERT_TRUE(testing::RunOne(*h.engine, Greedy(r.prompt, 1)).ok());
  auto c = testing::RunOne(*h.engine, r);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->prompt_logprobs.size(), r.prompt.size() - 1);
  for (size_t pos = 1; pos < r.prompt.size(); ++pos) {
    std::vector<int32_t> history(r.prompt.begin(), r.prompt.begin() + pos);
    const SampleResult want =
        ScoreToken(h.runner.LogitsAfter(history), h.runner.shape().vocab_size, r.prompt[pos], 2);
    EXPECT_EQ(c->prompt_logprobs[pos - 1].token.token_id, r.prompt[pos]);
    EXPECT_FLOAT_EQ(c->prompt_logprobs[pos - 1].token.logprob, want.logprob) << pos;
    ASSERT_EQ(c->prompt_logprobs[pos - 1].top.size(), 2u);
    EXPECT_EQ(c->prompt_logprobs[pos - 1].top[0].token_id, want.top[0].token_id);
  }
  EXPECT_EQ(c->tokens, Reference(h.runner, r, 3));
}

TEST(EngineTest, LongPromptIsChunkedWithoutStallingDecodes) {
  EngineOptions o;
  o.max_batch_tokens = 16;
  o.block_size = 8;
  Harness h(o);
  h.runner.set_step_delay_us(300);
  auto decoding = h.engine->Submit(Greedy({1, 2}, 60));
  ASSERT_TRUE(decoding.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::mt19937_64 rng(3);
  GenerationRequest big = Greedy(testing::RandomPrompt(rng, 300, 300, 60), 2);
  auto c = testing::RunOne(*h.engine, big);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->tokens, Reference(h.runner, big, 2));
  const Completion d = testing::Drain(**decoding);
  EXPECT_EQ(d.tokens, Reference(h.runner, Greedy({1, 2}, 60), 60));
  // 300 prompt tokens at <= 15 per step beside the decode: >= 20 steps, and the decode
  // advanced in them (it finished 60 tokens; a stalled decode would have taken 60 more steps).
  EXPECT_LE(h.runner.steps(), 60 + 5 + 2);
}

}  // namespace
}  // namespace phi::worker

namespace phi::worker {
namespace {

TEST(EngineExtraTest, HigherPriorityIsAdmittedFirst) {
  metrics::Registry registry;
  testing::FakeModelRunner runner;
  runner.set_step_delay_us(500);
  EngineOptions o;
  o.max_running = 1;
  o.registry = &registry;
  auto engine = std::move(Engine::Create(&runner, o)).value();
  GenerationRequest busy;
  busy.prompt = {1, 2};
  busy.stopping.max_new_tokens = 20;
  busy.stopping.ignore_eos = true;
  auto first = engine->Submit(busy);
  ASSERT_TRUE(first.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(3));  // running, the others wait
  GenerationRequest low = busy, high = busy;
  low.priority = -5;
  high.priority = 7;
  auto l = engine->Submit(low);
  auto h = engine->Submit(high);
  ASSERT_TRUE(l.ok() && h.ok());
  const Completion lc = testing::Drain(**l), hc = testing::Drain(**h);
  EXPECT_LT(hc.last.timings.queue_seconds, lc.last.timings.queue_seconds);
  testing::Drain(**first);
}

// GetStatus' cached_block_hashes follow the documented chained hash, so the gateway can
// compute the same values over its prompt ids.
TEST(EngineExtraTest, CachedBlockHashesFollowTheDocumentedChain) {
  metrics::Registry registry;
  testing::FakeModelRunner runner;
  EngineOptions o;
  o.block_size = 4;
  o.registry = &registry;
  auto engine = std::move(Engine::Create(&runner, o)).value();
  GenerationRequest r;
  r.prompt = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11};
  r.stopping.max_new_tokens = 1;
  ASSERT_TRUE(testing::RunOne(*engine, r).ok());
  const std::vector<uint64_t> want = common::PrefixBlockHashes(r.prompt, 4, 2);
  std::vector<uint64_t> got;
  for (int i = 0; i < 100 && got.size() < 2; ++i) {  // refreshed every 250 ms
    got = engine->Status(10).cached_block_hashes;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_NE(std::find(got.begin(), got.end(), want[0]), got.end());
  EXPECT_NE(std::find(got.begin(), got.end(), want[1]), got.end());
}

}  // namespace
}  // namespace phi::worker
