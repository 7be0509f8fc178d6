// Tensor-parallel candidate steps on ONE GPU: two CudaModelRunner ranks (vocabulary, heads and
// fc1 split in halves) in two threads of this process, joined by a test communicator that
// moves device buffers through the host (no NCCL, so a one-GPU machine runs it). Each rank
// steps a mixed batch twice over the same cache slots: whole rows (every row's slices
// all-gathered), then with num_candidates (whole rows' slices plus per-rank candidate records
// in one all-gather, uncovered rows gathered afterwards). The candidate step must give what
// the CPU runner's vocabulary gather builds from the whole rows (SelectCandidates per half +
// MergeCandidates, the same bytes), the same rows for everything kept whole, the same result
// on both ranks, and a flat min-p row must come back whole through GatherLogitRows.
// Label gpu; skips without a GPU or the tiny model (PHI_TEST_MODEL_DIR).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

#include "services/worker/backends/cuda/cuda_model_runner.h"
#include "tests/unit/worker/cuda/candidate_batch.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/cuda/host_staged_group.h"

namespace phi::worker::cuda {
namespace {

using testing::HostStagedGroup;
using candidate_test::Batch;
using candidate_test::kEngineMaxCandidates;
using candidate_test::ModelDir;
using candidate_test::Prompt;
using candidate_test::Seq;

// `slices`: PhiCudaOptions::candidate_slices of every rank (0: automatic, one slice).
void ExpectTwoRanksMatchTheCpuVocabularyGather(int slices) {
  constexpr int kWorld = 2;
  HostStagedGroup group(kWorld);
  std::vector<std::unique_ptr<CudaModelRunner>> ranks(kWorld);
  for (int r = 0; r < kWorld; ++r) {
    CudaRunnerOptions o;
    o.model.max_tokens_per_step = 256;
    o.model.max_seqs = 16;
    o.model.max_logit_rows = 256;
    o.model.candidate_slices = slices;
    o.rank = r;
    o.world_size = kWorld;
    o.make_comm = [&group, r](int, cudaStream_t) -> absl::StatusOr<CudaRunnerOptions::Comm> {
      return CudaRunnerOptions::Comm{std::make_unique<HostStagedGroup::Rank>(&group, r), nullptr};
    };
    auto made = CudaModelRunner::Create(ModelDir(), o);
    ASSERT_TRUE(made.ok()) << made.status();
    ranks[r] = *std::move(made);
    ASSERT_TRUE(ranks[r]->AllocateKvCache({.num_blocks = 64, .block_size = 16}).ok());
  }
  const int32_t vocab = ranks[0]->shape().vocab_size;
  const int32_t limit = ranks[0]->shape().tokenizer_vocab_size;
  const int32_t width = vocab / kWorld;

  // Greedy + logprobs, top-k/top-p/min-p + logprobs, a whole row (penalties), prompt
  // logprobs, a min-p so low that the 64 candidates cannot cover it (gathered afterwards).
  std::vector<Seq> seqs(5);
  seqs[0].logprobs = true;
  seqs[0].top_n = 5;
  seqs[1].sampling = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 40, .min_p = 0.05f, .seed = 7};
  seqs[1].logprobs = true;
  seqs[1].top_n = 20;
  seqs[2].sampling = {.temperature = 0.7f, .top_k = 40, .repetition_penalty = 1.2f, .seed = 3};
  seqs[3].all_logits = true;
  seqs[4].sampling = {.temperature = 1.0f, .min_p = 0.001f, .seed = 9};
  for (size_t i = 0; i < seqs.size(); ++i) {
    seqs[i].tokens = Prompt(4 + 5 * static_cast<int>(i), limit, 200 + static_cast<uint32_t>(i));
    seqs[i].blocks = {static_cast<int32_t>(2 * i), static_cast<int32_t>(2 * i + 1)};
  }
  const StepBatch wb = Batch(seqs, vocab, false), cb = Batch(seqs, vocab, true);
  std::vector<StepLogits> whole(kWorld), cand(kWorld);
  std::vector<absl::Status> st(2 * kWorld);
  std::vector<CudaLogitsStats> before(kWorld), after(kWorld);
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < kWorld; ++r) {
      threads.emplace_back([&, r] {
        st[r] = ranks[r]->Step(wb, &whole[r]);
        before[r] = ranks[r]->logits_stats();
        if (st[r].ok()) st[kWorld + r] = ranks[r]->Step(cb, &cand[r]);
        after[r] = ranks[r]->logits_stats();
      });
    }
    for (std::thread& t : threads) t.join();
  }
  for (const absl::Status& s : st) ASSERT_TRUE(s.ok()) << s;

  int candidate_rows = 0, fallback_rows = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    const std::span<const float> row = whole[0].LastRow(i);
    ASSERT_TRUE(std::equal(row.begin(), row.end(), whole[1].LastRow(i).begin())) << "ranks disagree";
    const int32_t count = cb.seqs[i].num_candidates;
    if (!cand[0].HasCandidates(i)) {
      ASSERT_FALSE(cand[1].HasCandidates(i));
      ASSERT_EQ(cand[0].num_rows[i], whole[0].num_rows[i]);
      for (int32_t r = 0; r < whole[0].num_rows[i]; ++r) {
        for (int k = 0; k < kWorld; ++k) {
          const auto a = cand[k].Row(cand[k].first_row[i] + r), b = whole[0].Row(whole[0].first_row[i] + r);
          EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "rank " << k << " row " << r;
        }
      }
      fallback_rows += count > 0;
      continue;
    }
    ASSERT_GT(count, 0);
    ++candidate_rows;
    std::vector<CandidateShard> shards;
    for (int r = 0; r < kWorld; ++r) {
      shards.push_back(SelectCandidates(row.subspan(r * width, width), r * width, vocab, count, seqs[i].logprobs));
    }
    const LogitCandidates want = MergeCandidates(shards, count);
    for (int k = 0; k < kWorld; ++k) {
      ASSERT_TRUE(cand[k].HasCandidates(i)) << "rank " << k;
      const LogitCandidates& got = cand[k].candidates[i];
      EXPECT_EQ(got.ids, want.ids);
      EXPECT_EQ(got.values, want.values);
      EXPECT_EQ(got.exact, want.exact);
      EXPECT_EQ(got.bound, want.bound);
      EXPECT_NEAR(got.log_sum_exp, want.log_sum_exp, 1e-12 * std::max(1.0, std::abs(want.log_sum_exp)));
    }
    for (uint64_t step = 0; step < 8; ++step) {
      EXPECT_EQ(SampleFromCandidates(cand[0].candidates[i], seqs[i].sampling, step, false, 0).token_id,
                SampleToken(row, vocab, seqs[i].sampling, step, nullptr, false, 0).token_id);
    }
  }
  EXPECT_EQ(candidate_rows, 2);  // greedy and top-k
  EXPECT_EQ(fallback_rows, 1);   // the flat min-p row, gathered after the verdict
  for (int k = 0; k < kWorld; ++k) {
    EXPECT_EQ(after[k].fallback_rows - before[k].fallback_rows, 1u);
    EXPECT_EQ(after[k].candidate_rows - before[k].candidate_rows, 2u);
  }
  std::printf("2 ranks on one GPU, %d slice(s) per rank: %d candidate rows, %d gathered after the verdict, %llu "
              "host bytes (whole rows: %llu)\n",
              std::max(slices, 1), candidate_rows, fallback_rows,
              static_cast<unsigned long long>(after[0].bytes_to_host - before[0].bytes_to_host),
              static_cast<unsigned long long>(before[0].bytes_to_host));
}

TEST(CudaTpCandidatesGpu, TwoRanksOnOneGpuMatchTheCpuVocabularyGather) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  ExpectTwoRanksMatchTheCpuVocabularyGather(0);
}

// Each rank selecting its half in 3 slices (joined per rank, then merged across ranks): the
// same candidates as whole halves.
TEST(CudaTpCandidatesGpu, TwoRanksWithSlicedHalvesMatchTheCpuVocabularyGather) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  ExpectTwoRanksMatchTheCpuVocabularyGather(3);
}

}  // namespace
}  // namespace phi::worker::cuda
