// CudaModelRunner::Step with SequenceStep::num_candidates on the tiny random checkpoint
// (PHI_TEST_MODEL_DIR; label gpu, skips without a GPU or the model): the same batch stepped
// twice over the same cache slots, first with whole rows, then with candidates. Candidate
// sequences come back with no row and the candidates the engine's CPU path would select from
// that whole row (SelectCandidates + MergeCandidates: same ids and values, log-sum-exp within
// 1e-12), the sampler gives the same tokens from them; the other sequences' rows are unchanged;
// the step copies to the host only records for candidate rows. Both again with rows selected
// in 3 vocabulary slices (PhiCudaOptions::candidate_slices) and joined by the runner.
#include <algorithm>
#include <cstdlib>
#include <span>
#include <vector>

#include "services/worker/backends/cuda/cuda_model_runner.h"
#include "tests/unit/worker/cuda/candidate_batch.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"

namespace phi::worker::cuda {
namespace {

using candidate_test::Batch;
using candidate_test::kEngineMaxCandidates;
using candidate_test::ModelDir;
using candidate_test::Prompt;
using candidate_test::Seq;

// The checkpoint with room for the tests' batches and a 64-block cache; candidate rows
// selected in `candidate_slices` vocabulary slices (0: the automatic choice, one slice for
// the tiny model's 2112 columns).
absl::StatusOr<std::unique_ptr<CudaModelRunner>> MakeRunner(int candidate_slices = 0) {
  CudaRunnerOptions o;
  o.model.max_tokens_per_step = 256;
  o.model.max_seqs = 16;
  o.model.max_logit_rows = 256;
  o.model.candidate_slices = candidate_slices;
  absl::StatusOr<std::unique_ptr<CudaModelRunner>> made = CudaModelRunner::Create(ModelDir(), o);
  if (!made.ok()) return made.status();
  if (absl::Status s = (*made)->AllocateKvCache({.num_blocks = 64, .block_size = 16}); !s.ok()) return s;
  return made;
}

void ExpectCandidateRowsEqualTheWholeRowPath(int slices) {
  auto made = MakeRunner(slices);
  ASSERT_TRUE(made.ok()) << made.status();
  CudaModelRunner& gpu = **made;
  const int32_t vocab = gpu.shape().vocab_size;
  const int32_t limit = gpu.shape().tokenizer_vocab_size;

  // Greedy with logprobs, top-k + top-p + min-p with logprobs, min-p alone, a penalised row and
  // prompt logprobs (both whole rows), and top-k without logprobs.
  std::vector<Seq> seqs(6);
  seqs[0].sampling = {};
  seqs[0].logprobs = true;
  seqs[0].top_n = 5;
  seqs[1].sampling = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 40, .min_p = 0.05f, .seed = 7};
  seqs[1].logprobs = true;
  seqs[1].top_n = 20;
  seqs[2].sampling = {.temperature = 0.5f, .min_p = 0.2f, .seed = 9};
  seqs[3].sampling = {.temperature = 0.7f, .top_k = 40, .repetition_penalty = 1.2f, .seed = 3};
  seqs[4].all_logits = true;
  seqs[5].sampling = {.temperature = 1.1f, .top_k = 2, .seed = 5};
  for (size_t i = 0; i < seqs.size(); ++i) {
    seqs[i].tokens = Prompt(5 + 7 * static_cast<int>(i), limit, 100 + static_cast<uint32_t>(i));
    seqs[i].blocks = {static_cast<int32_t>(3 * i), static_cast<int32_t>(3 * i + 1), static_cast<int32_t>(3 * i + 2)};
  }

  StepLogits whole, cand;
  ASSERT_TRUE(gpu.Step(Batch(seqs, vocab, false), &whole).ok());
  const CudaLogitsStats before = gpu.logits_stats();
  const StepBatch cb = Batch(seqs, vocab, true);
  ASSERT_TRUE(gpu.Step(cb, &cand).ok());
  const CudaLogitsStats after = gpu.logits_stats();

  int candidate_rows = 0, fallback_rows = 0, asked = 0, widest = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    const int32_t count = cb.seqs[i].num_candidates;
    if (count == 0) {
      // Whole rows, the same bytes as the whole-row step.
      ASSERT_FALSE(cand.HasCandidates(i));
      ASSERT_EQ(cand.num_rows[i], whole.num_rows[i]);
      for (int32_t r = 0; r < whole.num_rows[i]; ++r) {
        const auto a = cand.Row(cand.first_row[i] + r), b = whole.Row(whole.first_row[i] + r);
        EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "row " << r;
      }
      continue;
    }
    ++asked;
    widest = std::max(widest, count);
    const std::span<const float> row = whole.LastRow(i);
    const CandidateShard shard = SelectCandidates(row, 0, vocab, count, seqs[i].logprobs);
    const LogitCandidates want = MergeCandidates(std::span<const CandidateShard>(&shard, 1), count);
    if (!cand.HasCandidates(i)) {
      // Back whole only where the CPU path would fetch it too (min-p over a flat row, a tie at
      // the cut), and then the same row.
      EXPECT_FALSE(CandidatesCover(want, seqs[i].sampling, 0));
      const auto a = cand.LastRow(i);
      EXPECT_TRUE(std::equal(a.begin(), a.end(), row.begin()));
      ++fallback_rows;
      continue;
    }
    ++candidate_rows;
    const LogitCandidates& got = cand.candidates[i];
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.values, want.values);
    EXPECT_EQ(got.exact, want.exact);
    EXPECT_EQ(got.bound, want.bound);
    if (seqs[i].logprobs) {
      EXPECT_NEAR(got.log_sum_exp, want.log_sum_exp, 1e-12 * std::max(1.0, std::abs(want.log_sum_exp)));
    }
    for (uint64_t step = 0; step < 8; ++step) {
      const SampleResult a = SampleFromCandidates(got, seqs[i].sampling, step, seqs[i].logprobs, seqs[i].top_n);
      const SampleResult b = SampleToken(row, vocab, seqs[i].sampling, step, nullptr, seqs[i].logprobs, seqs[i].top_n);
      EXPECT_EQ(a.token_id, b.token_id) << "step " << step;
      EXPECT_NEAR(a.logprob, b.logprob, 1e-6) << "step " << step;
    }
  }
  EXPECT_EQ(asked, 4);  // sequences 0, 1, 2 and 5
  // Greedy and top-k rows of random logits have no tie at the cut; min-p alone may be too flat.
  EXPECT_GE(candidate_rows, 3);
  EXPECT_EQ(after.candidate_rows - before.candidate_rows, static_cast<uint64_t>(candidate_rows));
  EXPECT_EQ(after.fallback_rows - before.fallback_rows, static_cast<uint64_t>(fallback_rows));
  // Host copies of the candidate step: whole rows (penalised, prompt logprobs, fallbacks) and
  // one record per asking sequence at the step's widest count.
  const uint64_t full = after.full_rows - before.full_rows;
  EXPECT_EQ(full, static_cast<uint64_t>(1 + seqs[4].tokens.size() + fallback_rows));
  EXPECT_EQ(after.bytes_to_host - before.bytes_to_host,
            full * vocab * sizeof(float) + std::max(slices, 1) * asked * CandidateRecordBytes(widest));
  std::printf("candidate step (%d slice(s)): %d candidate rows, %d fallbacks, %llu bytes to the host (whole rows: %llu)\n",
              std::max(slices, 1), candidate_rows, fallback_rows,
              static_cast<unsigned long long>(after.bytes_to_host - before.bytes_to_host),
              static_cast<unsigned long long>(before.bytes_to_host));
}

TEST(CudaRunnerCandidatesGpu, CandidateRowsEqualTheWholeRowPath) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  ExpectCandidateRowsEqualTheWholeRowPath(0);
}

// Rows selected in 3 vocabulary slices (PhiCudaOptions::candidate_slices) and joined by the
// runner: the same candidates as the whole-row path, three records per row to the host.
TEST(CudaRunnerCandidatesGpu, CandidateRowsInSlicesEqualTheWholeRowPath) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  ExpectCandidateRowsEqualTheWholeRowPath(3);
}

void ExpectDecodeStepsReturnOnlyCandidateRecords(int slices) {
  auto made = MakeRunner(slices);
  ASSERT_TRUE(made.ok()) << made.status();
  CudaModelRunner& gpu = **made;
  const int32_t limit = gpu.shape().tokenizer_vocab_size;
  // Nine greedy sequences decode 6 tokens each from candidates (one record per row per step),
  // against the greedy argmax of whole rows in a second runner-free check: the candidate
  // token must be the argmax of the logits the same step would have copied.
  constexpr int kSeqs = 9;
  std::vector<std::vector<int32_t>> toks(kSeqs), blocks(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    toks[i] = Prompt(3 + i, limit, 300 + i);
    blocks[i] = {i * 2, i * 2 + 1};
  }
  std::vector<int> pos(kSeqs, 0);
  for (int step = 0; step < 7; ++step) {
    StepBatch b, w;
    for (int i = 0; i < kSeqs; ++i) {
      SequenceStep s{.seq_id = static_cast<uint64_t>(i + 1),
                     .tokens = std::span<const int32_t>(toks[i]).subspan(pos[i]),
                     .start_pos = pos[i],
                     .block_table = blocks[i]};
      w.seqs.push_back(s);
      s.num_candidates = 1;
      b.seqs.push_back(s);
    }
    StepLogits lw, lc;
    ASSERT_TRUE(gpu.Step(w, &lw).ok());
    const CudaLogitsStats before = gpu.logits_stats();
    ASSERT_TRUE(gpu.Step(b, &lc).ok());
    const CudaLogitsStats after = gpu.logits_stats();
    EXPECT_EQ(after.full_rows, before.full_rows) << "step " << step;
    EXPECT_EQ(after.bytes_to_host - before.bytes_to_host, std::max(slices, 1) * kSeqs * CandidateRecordBytes(1))
        << "step " << step;
    EXPECT_TRUE(lc.data.empty());
    for (int i = 0; i < kSeqs; ++i) {
      ASSERT_TRUE(lc.HasCandidates(i));
      const SampleResult want = SampleToken(lw.LastRow(i), gpu.shape().vocab_size, {}, 0, nullptr, false, 0);
      const SampleResult got = SampleFromCandidates(lc.candidates[i], {}, 0, false, 0);
      ASSERT_EQ(got.token_id, want.token_id) << "step " << step << " sequence " << i;
      pos[i] = static_cast<int>(toks[i].size());
      toks[i].push_back(got.token_id);
    }
  }
}

TEST(CudaRunnerCandidatesGpu, DecodeStepsReturnOnlyCandidateRecords) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  ExpectDecodeStepsReturnOnlyCandidateRecords(0);
}

TEST(CudaRunnerCandidatesGpu, DecodeStepsInSlicesReturnOnlyCandidateRecords) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  ExpectDecodeStepsReturnOnlyCandidateRecords(3);
}

}  // namespace
}  // namespace phi::worker::cuda
