// The CPU twin of top_candidates_forward (the GPU kernel's reference) against the engine's own
// candidate path, without a GPU (label unit):
//  - its records read back (CandidateShardFromRecord) equal SelectCandidates on the same row
//    or vocabulary slice bit for bit: ids, values, truncated and the log-sum-exp;
//  - SampleFromCandidates over them gives SampleToken's token and logprobs on the whole row
//    bit for bit, for every option set CandidatesNeeded lets travel as candidates, wherever
//    CandidatesCover says they suffice (rows with ties at the cut fall back to whole rows).
// Fixtures: the sampler candidate tests' rows and option sets (sampler_candidate_cases.h).
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "services/worker/backends/cuda/candidate_record.h"
#include "tests/unit/worker/cuda/kernels_cpu.h"
#include "tests/unit/worker/engine/sampler_candidate_cases.h"

namespace phi::worker::cuda {
namespace {

using candidate_cases::Case;
using candidate_cases::Cases;
using candidate_cases::RandomRow;

constexpr int32_t kEngineMaxCandidates = 64;  // engine.cc kMaxSampleCandidates

// Records of the twin for rows [0, rows) of `logits` (row stride ld), one count per row.
std::vector<char> TwinRecords(const std::vector<float>& logits, int64_t ld, int width, int id0, int vocab_limit,
                              const std::vector<int32_t>& counts, bool lse, int max_count) {
  const int n = static_cast<int>(counts.size());
  std::vector<int32_t> rows(n), want(n, lse ? 1 : 0);
  for (int r = 0; r < n; ++r) rows[r] = r;
  std::vector<char> out(n * CandidateRecordBytes(max_count));
  top_candidates_forward_cpu(logits.data(), ld, width, id0, vocab_limit, rows.data(), counts.data(), want.data(), n,
                             max_count, out.data());
  return out;
}

void ExpectSameShard(const CandidateShard& got, const CandidateShard& want) {
  EXPECT_EQ(got.ids, want.ids);
  ASSERT_EQ(got.values.size(), want.values.size());
  for (size_t j = 0; j < want.values.size(); ++j) {
    EXPECT_EQ(std::memcmp(&got.values[j], &want.values[j], 4), 0) << "value " << j;
  }
  EXPECT_EQ(got.truncated, want.truncated);
  // The same double, bit for bit (infinity without the log-sum-exp or an empty slice).
  EXPECT_EQ(std::memcmp(&got.log_sum_exp, &want.log_sum_exp, 8), 0)
      << got.log_sum_exp << " vs " << want.log_sum_exp;
}

TEST(TopCandidatesCpu, RecordsEqualSelectCandidates) {
  struct Shape {
    int width, ld, id0, vocab_limit;
  };
  // Whole rows (Phi-1.5's 51200 with its tokenizer's 50295 ids, odd sizes, one column), a
  // rank's slice, a slice wholly past the limit, a row stride wider than the row.
  const Shape shapes[] = {{51200, 51200, 0, 51200}, {51200, 51200, 0, 50295}, {600, 600, 0, 593},
                          {7, 7, 0, 7},             {1, 1, 0, 1},             {1000, 1003, 0, 1000},
                          {512, 512, 512, 1000},    {512, 512, 1024, 1000}};
  int checked = 0;
  for (const Shape& s : shapes) {
    for (bool ties : {false, true}) {
      for (int count : {1, 2, 41, 64}) {
        const uint64_t seed = static_cast<uint64_t>(s.width) * 131 + s.vocab_limit + count + (ties ? 7 : 0);
        const int nrows = s.width > 10000 ? 2 : 3;
        std::vector<float> logits = RandomRow(static_cast<int>(nrows * s.ld), seed, ties);
        if (ties && s.width > 1) {  // the two zeros tie: the lower id first, as floats compare
          logits[0] = 0.0f;
          logits[1] = -0.0f;
        }
        const std::vector<int32_t> counts(nrows, count);
        for (bool lse : {false, true}) {
          const std::vector<char> rec = TwinRecords(logits, s.ld, s.width, s.id0, s.vocab_limit, counts, lse, 64);
          for (int r = 0; r < nrows; ++r) {
            SCOPED_TRACE(::testing::Message() << "width " << s.width << " id0 " << s.id0 << " limit " << s.vocab_limit
                                              << " ties " << ties << " count " << count << " lse " << lse << " row "
                                              << r);
            CandidateShard got;
            ASSERT_TRUE(CandidateShardFromRecord(rec.data() + r * CandidateRecordBytes(64), 64, &got));
            const CandidateShard want = SelectCandidates(
                std::span<const float>(logits.data() + r * s.ld, s.width), s.id0, s.vocab_limit, count, lse);
            ExpectSameShard(got, want);
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 8 * 2 * 4 * 2 * 3 - 2 * 2 * 4 * 2);  // the two 51200 shapes have 2 rows
}

TEST(TopCandidatesCpu, UnusedEntriesAreMarked) {
  const std::vector<float> row = {1.0f, 3.0f, 2.0f};
  const std::vector<char> rec = TwinRecords(row, 3, 3, 0, 3, {5}, true, 8);
  uint32_t truncated = 1, valid = 0;
  std::memcpy(&truncated, rec.data() + 8, 4);
  std::memcpy(&valid, rec.data() + 12, 4);
  EXPECT_EQ(truncated, 0u);
  EXPECT_EQ(valid, 3u);
  const int32_t want_ids[] = {1, 2, 0, -1, -1, -1, -1, -1};
  for (int j = 0; j < 8; ++j) {
    int32_t id = 0;
    std::memcpy(&id, rec.data() + 20 + 8 * j, 4);
    EXPECT_EQ(id, want_ids[j]) << "entry " << j;
  }
}

// SampleFromCandidates over the twin's records against SampleToken over the whole row.
TEST(TopCandidatesCpu, SamplingFromRecordsEqualsWholeRowBitForBit) {
  int compared = 0, compared_logprobs = 0, not_covered = 0, not_covered_untied = 0;
  for (uint64_t seed = 1; seed <= 24; ++seed) {
    const bool ties = seed % 3 == 0;
    const int n = seed % 4 == 0 ? 51200 : (seed % 2 == 0 ? 2048 : 601);
    const int32_t vocab_limit = n == 51200 ? 50295 : n - static_cast<int32_t>(seed % 5) * 7;
    const std::vector<float> row = RandomRow(n, seed, ties);
    for (const Case& c : Cases(seed * 17)) {
      const int32_t count = CandidatesNeeded(c.options, vocab_limit, c.logprobs, c.top_n, kEngineMaxCandidates);
      ASSERT_GT(count, 0) << "top_k " << c.options.top_k;
      const std::vector<char> rec = TwinRecords(row, n, n, 0, vocab_limit, {count}, c.logprobs, kEngineMaxCandidates);
      LogitCandidates cand;
      ASSERT_TRUE(CandidatesFromRecord(rec.data(), kEngineMaxCandidates, count, &cand));
      if (!CandidatesCover(cand, c.options, 0)) {
        ++not_covered;
        if (!ties) ++not_covered_untied;
        continue;
      }
      for (uint64_t step = 0; step < 3; ++step) {
        SCOPED_TRACE(::testing::Message() << "seed " << seed << " n " << n << " T " << c.options.temperature
                                          << " top_k " << c.options.top_k << " top_p " << c.options.top_p
                                          << " min_p " << c.options.min_p << " step " << step);
        const SampleResult want = SampleToken(row, vocab_limit, c.options, step, nullptr, c.logprobs, c.top_n);
        const SampleResult got = SampleFromCandidates(cand, c.options, step, c.logprobs, c.top_n);
        ASSERT_EQ(got.token_id, want.token_id);
        ++compared;
        if (!c.logprobs) continue;
        EXPECT_EQ(got.logprob, want.logprob);
        ASSERT_EQ(got.top.size(), want.top.size());
        for (size_t j = 0; j < want.top.size(); ++j) {
          EXPECT_EQ(got.top[j].token_id, want.top[j].token_id) << "top " << j;
          EXPECT_EQ(got.top[j].logprob, want.top[j].logprob) << "top " << j;
        }
        ++compared_logprobs;
      }
    }
  }
  std::printf("compared %d tokens (%d with logprobs), %d rows not covered (%d untied)\n", compared,
              compared_logprobs, not_covered, not_covered_untied);
  EXPECT_GT(compared, 1000);
  EXPECT_GT(compared_logprobs, 300);
  EXPECT_GT(not_covered, 0);  // tied rows do reach the whole-row fallback
  EXPECT_EQ(not_covered_untied, 0);
}

}  // namespace
}  // namespace phi::worker::cuda
