#include "tests/integration/parallel/engine_sampling_scenario.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <vector>

#include "services/worker/engine/engine.h"
#include "tests/unit/worker/engine/engine_test_util.h"

namespace phi::worker::parallel::testing {
namespace {

// Only even ids (a stand-in for a grammar's mask; never terminates).
class EvenIdsConstraint : public worker::TokenConstraint {
 public:
  void FillNextTokenMask(std::span<uint32_t> words) override {
    std::fill(words.begin(), words.end(), 0x55555555u);
  }
  absl::Status Accept(int32_t token) override {
    return token % 2 == 0 ? absl::OkStatus() : absl::InternalError("odd token");
  }
  bool IsTerminated() const override { return false; }
};

worker::GenerationRequest Request(std::vector<int32_t> prompt, int32_t max_new, uint64_t seed) {
  worker::GenerationRequest r;
  r.prompt = std::move(prompt);
  r.seed = seed;
  r.stopping.max_new_tokens = max_new;
  r.stopping.ignore_eos = true;
  return r;
}

std::vector<worker::GenerationRequest> Requests() {
  std::vector<worker::GenerationRequest> rs;
  auto greedy = Request({5, 17, 33, 2, 91, 60, 8}, 10, 1);
  greedy.logprobs = true;
  greedy.top_logprobs = 5;
  rs.push_back(greedy);
  for (uint64_t seed : {7, 8, 9}) {
    auto topk = Request({44, 3, 12, 300, 1200}, 12, seed);
    topk.sampling.temperature = 0.9f;
    topk.sampling.top_k = 40;
    topk.logprobs = seed == 7;
    topk.top_logprobs = seed == 7 ? 3 : 0;
    rs.push_back(topk);
  }
  auto nucleus = Request({7, 7, 80, 1, 64, 22, 19, 5, 50}, 12, 21);
  nucleus.sampling.temperature = 1.3f;
  nucleus.sampling.top_k = 20;
  nucleus.sampling.top_p = 0.8f;
  nucleus.sampling.min_p = 0.02f;
  nucleus.logprobs = true;
  nucleus.top_logprobs = 20;
  rs.push_back(nucleus);
  auto min_p = Request({9, 8, 7}, 10, 22);
  min_p.sampling.temperature = 0.6f;
  min_p.sampling.min_p = 0.1f;
  rs.push_back(min_p);
  auto penalty = Request({100, 200, 100, 200}, 10, 23);  // whole rows (penalties read history)
  penalty.sampling.temperature = 0.8f;
  penalty.sampling.top_k = 10;
  penalty.sampling.repetition_penalty = 1.3f;
  penalty.logprobs = true;
  penalty.top_logprobs = 2;
  rs.push_back(penalty);
  auto prompt_lp = Request({11, 12, 13, 14, 15, 16}, 6, 24);  // whole rows for the prompt
  prompt_lp.prompt_logprobs = true;
  prompt_lp.top_logprobs = 4;
  prompt_lp.sampling.temperature = 0.7f;
  prompt_lp.sampling.top_k = 5;
  rs.push_back(prompt_lp);
  // Rows the request adjusts come back whole, top_k or not.
  auto biased = Request({21, 22, 23, 24}, 8, 25);
  biased.sampling.temperature = 0.9f;
  biased.sampling.top_k = 40;
  biased.logit_bias = {{2, 4.0f}, {3, -100.0f}, {40, 2.5f}};
  biased.logprobs = true;
  biased.top_logprobs = 3;
  rs.push_back(biased);
  auto constrained = Request({31, 32, 33}, 8, 26);
  constrained.sampling.temperature = 1.0f;
  constrained.sampling.top_k = 40;
  constrained.stopping.min_new_tokens = 4;
  constrained.constraint = std::make_shared<EvenIdsConstraint>();
  rs.push_back(constrained);
  return rs;
}

}  // namespace

int RunEngineSamplingScenario(worker::ModelRunner& runner, const std::function<VocabGatherStats()>& stats,
                              const std::string& out_prefix) {
  worker::EngineOptions options;
  options.num_kv_blocks = 64;
  options.block_size = 16;
  metrics::Registry registry;
  options.registry = &registry;
  auto engine = worker::Engine::Create(&runner, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  std::ofstream tokens(out_prefix + ".etokens"), logprobs(out_prefix + ".elogprobs", std::ios::binary);
  auto put_lp = [&](float v) { logprobs.write(reinterpret_cast<const char*>(&v), sizeof v); };
  // All requests at once: the batches mix candidate rows and whole rows.
  std::vector<std::shared_ptr<worker::RequestStream>> streams;
  for (auto& r : Requests()) {
    auto s = (*engine)->Submit(r);
    if (!s.ok()) {
      std::fprintf(stderr, "submit: %s\n", s.status().ToString().c_str());
      return 1;
    }
    streams.push_back(*s);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    const worker::testing::Completion c = worker::testing::Drain(*streams[i]);
    if (!c.last.status.ok()) {
      std::fprintf(stderr, "request %zu: %s\n", i, c.last.status.ToString().c_str());
      return 1;
    }
    tokens << "request " << i << " tokens";
    for (int32_t t : c.tokens) tokens << ' ' << t;
    tokens << "\n";
    for (const auto* lps : {&c.prompt_logprobs, &c.logprobs}) {
      for (const worker::PositionLogprob& p : *lps) {
        tokens << "  " << p.token.token_id << " top";
        put_lp(p.token.logprob);
        for (const auto& t : p.top) {
          tokens << ' ' << t.token_id;
          put_lp(t.logprob);
        }
        tokens << "\n";
      }
    }
  }
  // One top_k = 40 request alone: what its rows cost on the wire.
  const VocabGatherStats before = stats();
  auto alone = Request({3, 1, 4, 1, 5, 9, 2, 6}, 9, 99);
  alone.sampling.temperature = 0.8f;
  alone.sampling.top_k = 40;
  auto c = worker::testing::RunOne(**engine, alone);
  if (!c.ok() || !c->last.status.ok()) {
    std::fprintf(stderr, "top_k request failed\n");
    return 1;
  }
  tokens << "alone tokens";
  for (int32_t t : c->tokens) tokens << ' ' << t;
  tokens << "\n";
  const VocabGatherStats after = stats();
  std::printf("CANDIDATE_GATHER %llu %llu %llu %llu\n",
              static_cast<unsigned long long>(after.bytes_gathered - before.bytes_gathered),
              static_cast<unsigned long long>(after.candidate_rows - before.candidate_rows),
              static_cast<unsigned long long>(after.full_rows - before.full_rows),
              static_cast<unsigned long long>(after.fallback_rows - before.fallback_rows));
  // The same with a logit_bias: every sampled row whole.
  const VocabGatherStats before_biased = stats();
  alone.logit_bias = {{7, 1.0f}};
  auto biased = worker::testing::RunOne(**engine, alone);
  if (!biased.ok() || !biased->last.status.ok()) {
    std::fprintf(stderr, "biased top_k request failed\n");
    return 1;
  }
  const VocabGatherStats after_biased = stats();
  std::printf("ADJUSTED_GATHER %llu %llu\n",
              static_cast<unsigned long long>(after_biased.candidate_rows - before_biased.candidate_rows),
              static_cast<unsigned long long>(after_biased.full_rows - before_biased.full_rows));
  std::fflush(stdout);
  (*engine)->Shutdown();
  return 0;
}

}  // namespace phi::worker::parallel::testing
