// The engine with logit_bias, min_new_tokens and a fake TokenConstraint whose grammar is a
// pattern over token ids: outputs equal a reference loop that applies the same adjustments,
// a finished grammar ends the request with kStop, a refused token ends it with INTERNAL,
// preemption and the prefix cache keep the matcher's state, masks are filled off the engine
// thread, and the n copies of one prompt arriving together share one prefill.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "services/worker/engine/engine.h"
#include "tests/unit/worker/engine/engine_test_util.h"
#include "tests/unit/worker/engine/fake_model_runner.h"

namespace phi::worker {
namespace {

using testing::Completion;
using testing::FakeModelRunner;

constexpr int32_t kVocab = 64;
constexpr int32_t kTokenizerVocab = 60;
constexpr int32_t kEos = 3;

// Token k of the output must be an id below the tokenizer's with id % 4 == k % 4, never eos;
// after `length` tokens only eos is allowed, and accepting it terminates the grammar.
class PatternConstraint : public TokenConstraint {
 public:
  explicit PatternConstraint(int32_t length, int32_t fail_at = -1) : length_(length), fail_at_(fail_at) {}

  void FillNextTokenMask(std::span<uint32_t> words) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      fill_threads_.insert(std::this_thread::get_id());
      ++fills_;
    }
    std::fill(words.begin(), words.end(), 0u);
    for (int32_t id = 0; id < kVocab; ++id) {
      if (Allowed(id)) words[id / 32] |= 1u << (id % 32);
    }
  }

  absl::Status Accept(int32_t token) override {
    std::lock_guard<std::mutex> lock(mu_);
    accept_threads_.insert(std::this_thread::get_id());
    if (static_cast<int32_t>(accepted_.size()) == fail_at_) return absl::InternalError("injected refusal");
    if (terminated_ || !Allowed(token)) {
      return absl::InvalidArgumentError(absl::StrCat("token ", token, " not allowed at ", accepted_.size()));
    }
    accepted_.push_back(token);
    if (token == kEos) terminated_ = true;
    return absl::OkStatus();
  }

  bool IsTerminated() const override { return terminated_; }

  std::vector<int32_t> accepted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return accepted_;
  }
  std::set<std::thread::id> fill_threads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fill_threads_;
  }
  std::set<std::thread::id> accept_threads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return accept_threads_;
  }

 private:
  bool Allowed(int32_t id) const {
    const int32_t k = static_cast<int32_t>(accepted_.size());
    if (k >= length_) return id == kEos;
    return id < kTokenizerVocab && id != kEos && id % 4 == k % 4;
  }

  const int32_t length_;
  const int32_t fail_at_;
  mutable std::mutex mu_;
  std::vector<int32_t> accepted_;
  bool terminated_ = false;
  int64_t fills_ = 0;
  std::set<std::thread::id> fill_threads_, accept_threads_;
};

bool FollowsPattern(const std::vector<int32_t>& out, int32_t length) {
  if (static_cast<int32_t>(out.size()) != length) return false;
  for (int32_t k = 0; k < length; ++k) {
    if (out[k] == kEos || out[k] >= kTokenizerVocab || out[k] % 4 != k % 4) return false;
  }
  return true;
}

// What the engine must produce: the runner's pure logits, adjusted as the engine does.
std::vector<int32_t> Reference(const FakeModelRunner& runner, const GenerationRequest& r, int32_t max_new,
                               int32_t pattern_length = -1) {
  std::vector<int32_t> history = r.prompt, out;
  PenaltyHistory penalties;
  penalties.AddPrompt(r.prompt);
  SamplingOptions o = r.sampling;
  o.seed = r.seed.value_or(0);
  PatternConstraint grammar(pattern_length);
  std::vector<uint32_t> mask(TokenMaskWords(kVocab));
  std::vector<int32_t> ban;
  if (!r.stopping.ignore_eos) ban.push_back(kEos);
  ban.insert(ban.end(), r.stopping.stop_token_ids.begin(), r.stopping.stop_token_ids.end());
  for (int32_t step = 0; step < max_new; ++step) {
    LogitAdjust adjust{.bias = r.logit_bias};
    if (step < r.stopping.min_new_tokens) adjust.banned = ban;
    if (pattern_length >= 0) {
      grammar.FillNextTokenMask(mask);
      adjust.allowed = mask;
    }
    const int32_t t = SampleToken(runner.LogitsAfter(history), kVocab, o, step,
                                  o.has_penalties() ? &penalties : nullptr, false, 0, adjust)
                          .token_id;
    if (pattern_length >= 0 && !grammar.Accept(t).ok()) return {-1};
    const bool stop = (!r.stopping.ignore_eos && t == kEos) || grammar.IsTerminated() ||
                      std::count(r.stopping.stop_token_ids.begin(), r.stopping.stop_token_ids.end(), t) > 0;
    if (stop) return out;
    out.push_back(t);
    history.push_back(t);
    penalties.AddOutput(t);
  }
  return out;
}

struct Harness {
  explicit Harness(EngineOptions o = {}) : runner(kVocab, kTokenizerVocab, 512) {
    o.eos_token_ids = {kEos};
    o.registry = &registry;
    engine = std::move(Engine::Create(&runner, o)).value();
  }
  double Metric(const std::string& line_prefix) const {
    const std::string text = registry.Serialize();
    const size_t at = text.find("\n" + line_prefix + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + line_prefix.size() + 2));
  }
  metrics::Registry registry;
  FakeModelRunner runner;
  std::unique_ptr<Engine> engine;
};

GenerationRequest Request(std::vector<int32_t> prompt, int32_t max_new, uint64_t seed, bool sampled) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.stopping.max_new_tokens = max_new;
  if (sampled) {
    r.sampling.temperature = 1.0f;
    r.sampling.top_k = 30;
    r.sampling.repetition_penalty = 1.2f;
  }
  r.seed = seed;
  return r;
}

TEST(EngineConstraintTest, OutputFollowsTheGrammarAndEndsWithStop) {
  Harness h;
  std::mt19937_64 rng(1);
  std::vector<GenerationRequest> requests;
  std::vector<std::shared_ptr<PatternConstraint>> grammars;
  for (int i = 0; i < 24; ++i) {
    GenerationRequest r = Request(testing::RandomPrompt(rng, 3, 30, kTokenizerVocab), 40, 100 + i, i % 3 != 0);
    r.stopping.ignore_eos = i % 2 == 0;  // a finished grammar stops the request either way
    if (i % 4 != 3) {  // every fourth request is free: batched with constrained ones
      grammars.push_back(std::make_shared<PatternConstraint>(5 + i % 7));
      r.constraint = grammars.back();
    } else {
      grammars.push_back(nullptr);
    }
    requests.push_back(r);
  }
  const std::vector<Completion> out = testing::RunConcurrently(*h.engine, requests, {});
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(out[i].last.status.ok()) << out[i].last.status;
    if (grammars[i] == nullptr) {
      EXPECT_EQ(out[i].tokens, Reference(h.runner, requests[i], 40)) << i;
      continue;
    }
    const int32_t length = 5 + static_cast<int32_t>(i) % 7;
    EXPECT_EQ(out[i].last.finish_reason, FinishReason::kStop) << i;
    EXPECT_TRUE(FollowsPattern(out[i].tokens, length)) << i;
    EXPECT_EQ(out[i].last.completion_tokens, length + 1);  // the eos that ended it counts
    std::vector<int32_t> accepted = grammars[i]->accepted();
    ASSERT_EQ(accepted.size(), out[i].tokens.size() + 1);
    EXPECT_EQ(accepted.back(), kEos);
    accepted.pop_back();
    EXPECT_EQ(accepted, out[i].tokens);
    EXPECT_EQ(out[i].tokens, Reference(h.runner, requests[i], 40, length)) << i;
  }
}

TEST(EngineConstraintTest, MasksAreFilledOffTheEngineThread) {
  Harness h;
  auto grammar = std::make_shared<PatternConstraint>(8);
  GenerationRequest r = Request({1, 2, 3, 4}, 20, 7, true);
  r.constraint = grammar;
  auto done = testing::RunOne(*h.engine, r);
  ASSERT_TRUE(done.ok());
  ASSERT_EQ(done->last.finish_reason, FinishReason::kStop);
  const std::set<std::thread::id> fills = grammar->fill_threads(), accepts = grammar->accept_threads();
  ASSERT_EQ(accepts.size(), 1u);  // the engine thread
  ASSERT_FALSE(fills.empty());
  for (const std::thread::id& id : fills) EXPECT_EQ(accepts.count(id), 0u);
  EXPECT_GT(h.Metric("phi_worker_grammar_mask_wait_seconds_count"), 0);
}

TEST(EngineConstraintTest, RefusedTokenEndsTheRequestWithInternal) {
  Harness h;
  GenerationRequest r = Request({5, 6, 7}, 20, 1, false);
  r.constraint = std::make_shared<PatternConstraint>(10, /*fail_at=*/3);
  auto done = testing::RunOne(*h.engine, r);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->last.finish_reason, FinishReason::kError);
  EXPECT_EQ(done->last.status.code(), absl::StatusCode::kInternal) << done->last.status;
  EXPECT_NE(done->last.status.message().find("grammar refused"), std::string::npos);
  EXPECT_EQ(done->tokens.size(), 3u);  // the tokens before the refusal were streamed
  // The engine goes on serving.
  auto next = testing::RunOne(*h.engine, Request({5, 6, 7}, 5, 1, false));
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(next->last.status.ok());
}

// Preemption recomputes KV from the kept tokens: the matcher, which has accepted every
// generated token once, must not see them again (a second Accept of the same tokens would
// break the pattern and end the request with INTERNAL).
TEST(EngineConstraintTest, PreemptionKeepsTheMatchersState) {
  EngineOptions o;
  o.num_kv_blocks = 12;
  o.block_size = 8;
  o.max_batch_tokens = 32;
  Harness h(o);
  std::mt19937_64 rng(3);
  std::vector<GenerationRequest> requests;
  std::vector<std::shared_ptr<PatternConstraint>> grammars;
  for (int i = 0; i < 16; ++i) {
    GenerationRequest r = Request(testing::RandomPrompt(rng, 5, 40, kTokenizerVocab), 45, 50 + i, i % 2 == 0);
    grammars.push_back(std::make_shared<PatternConstraint>(40));
    r.constraint = grammars.back();
    requests.push_back(r);
  }
  const std::vector<Completion> out = testing::RunConcurrently(*h.engine, requests, {});
  EXPECT_GT(h.Metric("phi_worker_preemptions_total"), 0) << "the test needs preemptions";
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(out[i].last.status.ok()) << i << ": " << out[i].last.status;
    EXPECT_EQ(out[i].last.finish_reason, FinishReason::kStop);
    EXPECT_TRUE(FollowsPattern(out[i].tokens, 40)) << i;
    EXPECT_EQ(grammars[i]->accepted().size(), 41u);
    EXPECT_EQ(out[i].tokens, Reference(h.runner, requests[i], 45, 40)) << i;
  }
  EXPECT_TRUE(testing::WaitIdle(*h.engine));
  EXPECT_EQ(h.engine->Status().kv_blocks_free, 12);
}

TEST(EngineConstraintTest, PrefixCacheReuseKeepsTheOutput) {
  EngineOptions o;
  o.block_size = 8;
  Harness h(o);
  std::mt19937_64 rng(4);
  const std::vector<int32_t> prompt = testing::RandomPrompt(rng, 30, 30, kTokenizerVocab);
  std::vector<std::vector<int32_t>> outputs;
  for (int round = 0; round < 2; ++round) {
    GenerationRequest r = Request(prompt, 20, 9, true);
    r.constraint = std::make_shared<PatternConstraint>(12);
    auto done = testing::RunOne(*h.engine, r);
    ASSERT_TRUE(done.ok());
    ASSERT_TRUE(done->last.status.ok());
    EXPECT_EQ(done->last.cached_prompt_tokens, round == 0 ? 0 : 24);
    EXPECT_TRUE(FollowsPattern(done->tokens, 12));
    outputs.push_back(done->tokens);
  }
  EXPECT_EQ(outputs[0], outputs[1]);
}

TEST(EngineConstraintTest, LogitBiasForcesAndForbids) {
  Harness h;
  GenerationRequest forced = Request({1, 2, 3}, 10, 5, true);
  forced.logit_bias = {{17, 100.0f}};
  auto a = testing::RunOne(*h.engine, forced);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->tokens, std::vector<int32_t>(10, 17));

  GenerationRequest free = Request({1, 2, 3}, 10, 5, false);
  free.stopping.ignore_eos = true;
  auto b = testing::RunOne(*h.engine, free);
  ASSERT_TRUE(b.ok());
  ASSERT_FALSE(b->tokens.empty());
  GenerationRequest forbidden = free;
  forbidden.logit_bias = {{b->tokens[0], -100.0f}};
  auto c = testing::RunOne(*h.engine, forbidden);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(std::count(c->tokens.begin(), c->tokens.end(), b->tokens[0]), 0);
  EXPECT_EQ(c->tokens, Reference(h.runner, forbidden, 10));
}

TEST(EngineConstraintTest, MinNewTokensBansEosAndStopIds) {
  Harness h;
  // A prompt whose greedy continuation ends on eos early.
  std::mt19937_64 rng(6);
  for (int attempt = 0; attempt < 500; ++attempt) {
    GenerationRequest r = Request(testing::RandomPrompt(rng, 2, 10, kTokenizerVocab), 30, 1, false);
    const std::vector<int32_t> plain = Reference(h.runner, r, 30);
    if (plain.size() >= 8) continue;
    r.stopping.min_new_tokens = 12;
    r.stopping.stop_token_ids = {9};
    auto done = testing::RunOne(*h.engine, r);
    ASSERT_TRUE(done.ok());
    EXPECT_GE(done->last.completion_tokens, 12);
    for (size_t k = 0; k < std::min<size_t>(12, done->tokens.size()); ++k) {
      EXPECT_NE(done->tokens[k], kEos);
      EXPECT_NE(done->tokens[k], 9);
    }
    EXPECT_EQ(done->tokens, Reference(h.runner, r, 30));
    return;
  }
  FAIL() << "no prompt ends early";
}

TEST(EngineConstraintTest, RefusesBadLogitBiasAndMinNewTokensNamingTheField) {
  Harness h;
  auto refused = [&](GenerationRequest r, const std::string& field) {
    absl::StatusOr<std::shared_ptr<RequestStream>> s = h.engine->Submit(std::move(r));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(field), std::string::npos) << s.status();
  };
  GenerationRequest r = Request({1}, 10, 1, false);
  r.logit_bias = {{kVocab, 1.0f}};
  refused(r, "sampling.logit_bias[64]");
  r.logit_bias = {{5, 100.5f}};
  refused(r, "sampling.logit_bias[5] = 100.5 is outside [-100, 100]");
  r.logit_bias = {{5, std::numeric_limits<float>::quiet_NaN()}};
  refused(r, "sampling.logit_bias[5]");
  r.logit_bias.assign(1025, TokenBias{1, 1.0f});
  refused(r, "sampling.logit_bias: 1025 entries, at most 1024");
  r.logit_bias.clear();
  r.stopping.min_new_tokens = 11;
  refused(r, "stopping.min_new_tokens = 11 is outside [0, 10]");
  r.stopping.min_new_tokens = -1;
  refused(r, "stopping.min_new_tokens");
  r.stopping.min_new_tokens = 10;
  r.logit_bias = {{63, -100.0f}, {0, 100.0f}};
  EXPECT_TRUE(h.engine->Submit(r).ok());
}

// n choices of one request arrive together: the prompt's full blocks are computed once.
void SubmitTogether(Harness& h, const std::vector<int32_t>& prompt, int n, std::vector<Completion>* out) {
  // A running request keeps the engine busy in slow steps, so that the n arrive while a step
  // runs and are scheduled together.
  h.runner.set_step_delay_us(30000);
  auto busy = h.engine->Submit(Request({9, 9, 9}, 6, 1, false));
  ASSERT_TRUE(busy.ok());
  OutputChunk first;
  ASSERT_TRUE((*busy)->Next(&first, absl::Seconds(10)));
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < n; ++i) {
    auto s = h.engine->Submit(Request(prompt, 8, 1000 + i, true));
    ASSERT_TRUE(s.ok());
    streams.push_back(*s);
  }
  h.runner.set_step_delay_us(0);
  for (auto& s : streams) out->push_back(testing::Drain(*s));
  testing::Drain(**busy);
}

TEST(EngineConstraintTest, IdenticalPromptsArrivingTogetherSharePrefill) {
  EngineOptions o;
  o.block_size = 16;
  Harness h(o);
  std::mt19937_64 rng(7);
  const std::vector<int32_t> prompt = testing::RandomPrompt(rng, 37, 37, kTokenizerVocab);
  const double before = h.Metric("phi_worker_prefill_tokens_total");
  std::vector<Completion> out;
  SubmitTogether(h, prompt, 4, &out);
  const double prefill = h.Metric("phi_worker_prefill_tokens_total") - before - 3;  // the busy prompt
  EXPECT_GE(prefill, 37);
  EXPECT_LE(prefill, 37 + 4 * (o.block_size - 1));
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(out[i].last.status.ok());
    EXPECT_EQ(out[i].tokens, Reference(h.runner, Request(prompt, 8, 1000 + i, true), 8)) << i;
    distinct.insert(out[i].tokens);
  }
  EXPECT_GT(distinct.size(), 1u);
  int32_t cached = 0;
  for (const Completion& c : out) cached += c.last.cached_prompt_tokens;
  EXPECT_EQ(cached, 3 * 32);
}

TEST(EngineConstraintTest, WithoutThePrefixCacheNothingIsHeldBack) {
  EngineOptions o;
  o.block_size = 16;
  o.enable_prefix_cache = false;
  Harness h(o);
  std::mt19937_64 rng(8);
  const std::vector<int32_t> prompt = testing::RandomPrompt(rng, 37, 37, kTokenizerVocab);
  std::vector<Completion> out;
  SubmitTogether(h, prompt, 4, &out);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(out[i].last.status.ok());
    EXPECT_EQ(out[i].tokens, Reference(h.runner, Request(prompt, 8, 1000 + i, true), 8)) << i;
  }
  EXPECT_EQ(h.Metric("phi_worker_prefill_tokens_total"), 3 + 4 * 37);
}

}  // namespace
}  // namespace phi::worker
