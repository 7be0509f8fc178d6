// The engine tests of tests/unit/worker/engine/engine_test.cc with the real CPU runner on a
// tiny random model made by tools/make_model.py (fixture worker_tiny_model): batch invariance
// (greedy and seeded), prefix caching, a tiny KV cache, and 1,000 requests with cancellations.
// The model folder comes from $PHI_TEST_MODEL_DIR.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/engine/engine.h"
#include "tests/unit/worker/engine/engine_test_util.h"

namespace phi::worker {
namespace {

using testing::Completion;

std::string ModelDir() {
  const char* d = std::getenv("PHI_TEST_MODEL_DIR");
  return d ? d : "";
}

struct CpuHarness {
  explicit CpuHarness(EngineOptions o) {
    cpu::CpuRunnerOptions ro;
    ro.weights = cpu::WeightFormat::kF32;
    auto r = cpu::CpuModelRunner::Create(ModelDir(), ro);
    EXPECT_TRUE(r.ok()) << r.status();
    runner = std::move(*r);
    o.eos_token_ids = runner->generation().eos_token_ids;
    o.registry = &registry;
    auto e = Engine::Create(runner.get(), o);
    EXPECT_TRUE(e.ok()) << e.status();
    engine = std::move(*e);
  }
  int32_t vocab() const { return runner->shape().tokenizer_vocab_size; }
  metrics::Registry registry;
  std::unique_ptr<cpu::CpuModelRunner> runner;
  std::unique_ptr<Engine> engine;
};

GenerationRequest Make(std::vector<int32_t> prompt, int32_t max_new, bool sampled, uint64_t seed) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.stopping.max_new_tokens = max_new;
  r.stopping.ignore_eos = true;
  if (sampled) {
    r.sampling.temperature = 1.0f;
    r.sampling.top_p = 0.95f;
    r.sampling.top_k = 100;
    r.sampling.repetition_penalty = 1.05f;
    r.sampling.frequency_penalty = 0.1f;
    r.seed = seed;
  }
  return r;
}

// Value of the exposition line that starts with `series ` (0 when absent).
double MetricValue(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return 0;
  return std::strtod(text.c_str() + at + series.size() + 2, nullptr);
}

class EngineCpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set (run through ctest)";
  }
};

// (a) 56 random prompts with random lengths and arrival times, half greedy, half seeded
// sampling, concurrently: each output equals the same request run alone.
TEST_F(EngineCpuTest, BatchInvariance) {
  EngineOptions o;
  o.num_kv_blocks = 512;
  o.block_size = 16;
  o.max_batch_tokens = 128;
  CpuHarness h(o);
  std::mt19937_64 rng(21);
  std::vector<GenerationRequest> requests;
  std::vector<int> delays;
  for (int i = 0; i < 56; ++i) {
    requests.push_back(Make(testing::RandomPrompt(rng, 1, 200, h.vocab()), 4 + rng() % 24, i % 2 == 1, rng()));
    delays.push_back(static_cast<int>(rng() % 30000));
  }
  const std::vector<Completion> together = testing::RunConcurrently(*h.engine, requests, delays);
  // The concurrent phase really batched: most steps ran several sequences.
  const std::string text = h.registry.Serialize();
  const double single = MetricValue(text, "phi_worker_batch_size_bucket{le=\"1\"}");
  const double steps = MetricValue(text, "phi_worker_batch_size_count");
  const double mean_batch = MetricValue(text, "phi_worker_batch_size_sum") / steps;
  std::printf("concurrent phase: %.0f steps, %.0f with one sequence, mean batch %.1f\n", steps, single, mean_batch);
  EXPECT_LT(single, 0.5 * steps);
  EXPECT_GT(mean_batch, 4.0);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i].last.status.ok()) << together[i].last.status;
    auto alone = testing::RunOne(*h.engine, requests[i]);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ(together[i].tokens, alone->tokens) << "request " << i << " (prompt " << requests[i].prompt.size()
                                                 << " tokens, " << (i % 2 ? "sampled" : "greedy") << ")";
  }
}

// (b) A second request sharing a prefix reports cached prompt tokens and gives the output
// it gives without the cache.
TEST_F(EngineCpuTest, PrefixCacheReuseGivesIdenticalOutput) {
  EngineOptions o;
  o.num_kv_blocks = 256;
  CpuHarness h(o);
  EngineOptions off = o;
  off.enable_prefix_cache = false;
  CpuHarness cold(off);
  std::mt19937_64 rng(22);
  const std::vector<int32_t> system = testing::RandomPrompt(rng, 100, 100, h.vocab());
  std::vector<int32_t> a = system, b = system;
  a.push_back(5);
  b.insert(b.end(), {7, 8, 9});
  for (bool sampled : {false, true}) {
    auto first = testing::RunOne(*h.engine, Make(a, 16, sampled, 1));
    ASSERT_TRUE(first.ok());
    auto second = testing::RunOne(*h.engine, Make(b, 16, sampled, 2));
    ASSERT_TRUE(second.ok());
    EXPECT_EQ(second->last.cached_prompt_tokens, 96);  // 6 full blocks of 16
    auto reference = testing::RunOne(*cold.engine, Make(b, 16, sampled, 2));
    ASSERT_TRUE(reference.ok());
    EXPECT_EQ(reference->last.cached_prompt_tokens, 0);
    EXPECT_EQ(second->tokens, reference->tokens);
  }
}

// (c) Under a tiny KV cache (preemption by recompute) every request finishes with the
// output it has without pressure.
TEST_F(EngineCpuTest, TinyKvCacheKeepsOutputs) {
  EngineOptions big;
  big.num_kv_blocks = 1024;
  big.block_size = 8;
  CpuHarness roomy(big);
  EngineOptions tiny = big;
  tiny.num_kv_blocks = 14;  // 112 tokens for 16 requests of up to ~90
  tiny.max_batch_tokens = 64;
  CpuHarness h(tiny);
  std::mt19937_64 rng(23);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 16; ++i) {
    requests.push_back(Make(testing::RandomPrompt(rng, 10, 60, h.vocab()), 30, i % 2 == 0, rng()));
  }
  const std::vector<Completion> pressed = testing::RunConcurrently(*h.engine, requests, {});
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(pressed[i].last.status.ok()) << pressed[i].last.status;
    auto ref = testing::RunOne(*roomy.engine, requests[i]);
    ASSERT_TRUE(ref.ok());
    EXPECT_EQ(pressed[i].tokens, ref->tokens) << "request " << i;
  }
  EXPECT_EQ(h.registry.Serialize().find("phi_worker_preemptions_total 0\n"), std::string::npos)
      << "the cache was not small enough to preempt";
  ASSERT_TRUE(testing::WaitIdle(*h.engine));
  EXPECT_EQ(h.engine->Status().kv_blocks_free, 14);
}

// (d) 1,000 requests with random cancellations and deadlines: KV blocks used and the
// waiting/running gauges return to 0.
TEST_F(EngineCpuTest, ThousandRequestsWithCancellations) {
  EngineOptions o;
  o.num_kv_blocks = 96;
  o.block_size = 16;
  o.max_waiting = 1000;
  CpuHarness h(o);
  std::atomic<int> cancelled{0}, done{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 r(100 + c);
      for (int i = 0; i < 125; ++i) {
        auto stream = h.engine->Submit(Make(testing::RandomPrompt(r, 1, 80, h.vocab()), 1 + r() % 16, r() % 2, r()));
        ASSERT_TRUE(stream.ok()) << stream.status();
        const int mode = static_cast<int>(r() % 3);
        Completion got;
        if (mode == 0) {
          (*stream)->Cancel();
          got = testing::Drain(**stream);
        } else if (mode == 1) {
          // A client deadline: give up after a random few milliseconds.
          got = testing::Drain(**stream, absl::Microseconds(r() % 3000));
          if (!got.last.finished) {
            (*stream)->Cancel();
            got = testing::Drain(**stream);
          }
        } else {
          got = testing::Drain(**stream);
        }
        ASSERT_TRUE(got.last.finished);
        if (got.last.finish_reason == FinishReason::kCancelled) ++cancelled;
        ++done;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(done.load(), 1000);
  EXPECT_GT(cancelled.load(), 200);
  ASSERT_TRUE(testing::WaitIdle(*h.engine));
  const std::string text = h.registry.Serialize();
  EXPECT_NE(text.find("phi_worker_kv_blocks_used 0\n"), std::string::npos);
  EXPECT_NE(text.find("phi_worker_requests_waiting 0\n"), std::string::npos);
  EXPECT_NE(text.find("phi_worker_requests_running 0\n"), std::string::npos);
  EXPECT_EQ(h.engine->Status().kv_blocks_free, 96);
}

}  // namespace
}  // namespace phi::worker
