// The engine over a runner that returns sampled rows as candidates (the fake model's rows split
// into two vocabulary slices, as a tensor-parallel group does) gives exactly the outputs of the
// same runner returning whole rows: tokens identical, logprobs within 1e-5. Rows with
// penalties, prompt logprobs or pure temperature are never asked for as candidates.
#include <atomic>
#include <random>

#include <gtest/gtest.h>

#include "services/worker/engine/engine.h"
#include "tests/unit/worker/engine/engine_test_util.h"
#include "tests/unit/worker/engine/fake_model_runner.h"

namespace phi::worker {
namespace {

using testing::Completion;
using testing::FakeModelRunner;

class CandidateRunner final : public FakeModelRunner {
 public:
  absl::Status Step(const StepBatch& batch, StepLogits* out) override {
    if (auto s = FakeModelRunner::Step(batch, out); !s.ok()) return s;
    out->candidates.assign(batch.seqs.size(), {});
    const int32_t half = shape().vocab_size / 2;
    for (size_t i = 0; i < batch.seqs.size(); ++i) {
      const SequenceStep& s = batch.seqs[i];
      if (s.num_candidates <= 0) continue;
      if (s.all_logits || s.sampling.has_penalties()) ++misasked_;
      std::span<const float> row = out->LastRow(i);
      std::vector<CandidateShard> shards;
      for (int r = 0; r < 2; ++r) {
        shards.push_back(SelectCandidates(row.subspan(r * half, half), r * half, shape().vocab_size,
                                          s.num_candidates, s.logprobs));
      }
      LogitCandidates c = MergeCandidates(shards, s.num_candidates);
      if (!CandidatesCover(c, s.sampling, 0)) continue;  // keep the whole row
      out->candidates[i] = std::move(c);
      out->num_rows[i] = 0;
      ++candidate_rows_;
    }
    return absl::OkStatus();
  }
  std::atomic<int> candidate_rows_{0}, misasked_{0};
};

GenerationRequest Request(std::mt19937_64& rng, int kind) {
  GenerationRequest r;
  r.prompt = testing::RandomPrompt(rng, 1, 40, 60);
  r.stopping.max_new_tokens = 1 + static_cast<int32_t>(rng() % 20);
  r.stopping.ignore_eos = true;
  r.seed = rng();
  switch (kind % 6) {
    case 0:  // greedy with logprobs
      r.logprobs = true;
      r.top_logprobs = 5;
      break;
    case 1:
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 20;
      r.logprobs = true;
      r.top_logprobs = 3;
      break;
    case 2:
      r.sampling.temperature = 1.2f;
      r.sampling.top_k = 10;
      r.sampling.top_p = 0.8f;
      r.sampling.min_p = 0.05f;
      break;
    case 3:
      r.sampling.temperature = 0.7f;
      r.sampling.min_p = 0.1f;
      break;
    case 4:  // penalties: whole rows
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 20;
      r.sampling.repetition_penalty = 1.2f;
      r.logprobs = true;
      break;
    case 5:  // prompt logprobs, pure temperature: whole rows
      r.sampling.temperature = 0.8f;
      r.prompt_logprobs = true;
      r.top_logprobs = 2;
      break;
  }
  return r;
}

TEST(EngineCandidatesTest, SamplingFromCandidatesMatchesWholeRows) {
  EngineOptions o;
  o.num_kv_blocks = 256;
  o.block_size = 8;
  o.max_batch_tokens = 64;
  o.eos_token_ids = {3};
  metrics::Registry reg_rows, reg_cand;
  FakeModelRunner rows_runner;
  CandidateRunner cand_runner;
  EngineOptions o_rows = o, o_cand = o;
  o_rows.registry = &reg_rows;
  o_cand.registry = &reg_cand;
  auto rows_engine = std::move(Engine::Create(&rows_runner, o_rows)).value();
  auto cand_engine = std::move(Engine::Create(&cand_runner, o_cand)).value();
  std::mt19937_64 rng(13);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 36; ++i) requests.push_back(Request(rng, i));
  const std::vector<int> no_delays(requests.size(), 0);
  const std::vector<Completion> want = testing::RunConcurrently(*rows_engine, requests, no_delays);
  const std::vector<Completion> got = testing::RunConcurrently(*cand_engine, requests, no_delays);
  EXPECT_GT(cand_runner.candidate_rows_.load(), 100);
  EXPECT_EQ(cand_runner.misasked_.load(), 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i);
    ASSERT_TRUE(got[i].last.status.ok()) << got[i].last.status;
    EXPECT_EQ(got[i].tokens, want[i].tokens);
    for (const auto& [a, b] : {std::pair{&got[i].logprobs, &want[i].logprobs},
                               std::pair{&got[i].prompt_logprobs, &want[i].prompt_logprobs}}) {
      ASSERT_EQ(a->size(), b->size());
      for (size_t p = 0; p < a->size(); ++p) {
        EXPECT_EQ((*a)[p].token.token_id, (*b)[p].token.token_id);
        EXPECT_NEAR((*a)[p].token.logprob, (*b)[p].token.logprob, 1e-5);
        ASSERT_EQ((*a)[p].top.size(), (*b)[p].top.size());
        for (size_t j = 0; j < (*a)[p].top.size(); ++j) {
          EXPECT_EQ((*a)[p].top[j].token_id, (*b)[p].top[j].token_id);
          EXPECT_NEAR((*a)[p].top[j].logprob, (*b)[p].top[j].logprob, 1e-5);
        }
      }
    }
  }
}

}  // namespace
}  // namespace phi::worker
