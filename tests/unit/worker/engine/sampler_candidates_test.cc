// The candidate path (each rank's top-C of its vocabulary slice plus its log-sum-exp, merged on
// the leader) against SampleToken on the whole row: the same token for greedy, temperature with
// top-k / top-p / min-p, and logprobs with top_n within 1e-5, on seeded random rows split into
// 1-4 slices, with and without ties; rows whose ties straddle the cut report "not covered".
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "services/worker/engine/sampler.h"
#include "tests/unit/worker/engine/sampler_candidate_cases.h"

namespace phi::worker {
namespace {

constexpr int32_t kMaxCandidates = 64;

using candidate_cases::RandomRow;

// Splits the row into `world` equal slices as a vocabulary-split lm_head does.
LogitCandidates Candidates(const std::vector<float>& row, int world, int32_t vocab_limit, int32_t count) {
  const int32_t width = static_cast<int32_t>(row.size()) / world;
  std::vector<CandidateShard> shards;
  for (int r = 0; r < world; ++r) {
    shards.push_back(SelectCandidates(std::span<const float>(row).subspan(r * width, width), r * width, vocab_limit,
                                      count));
  }
  return MergeCandidates(shards, count);
}

using candidate_cases::Case;
using candidate_cases::Cases;

TEST(SamplerCandidatesTest, MatchesSampleTokenOnWholeRows) {
  int compared = 0, not_covered = 0, not_covered_untied = 0;
  for (uint64_t seed = 1; seed <= 60; ++seed) {
    const bool ties = seed % 3 == 0;
    const int n = seed % 2 == 0 ? 2048 : 600;
    const int32_t vocab_limit = n - static_cast<int32_t>(seed % 5) * 7;  // some ids past the tokenizer
    const std::vector<float> row = RandomRow(n, seed, ties);
    for (int world : {1, 2, 4}) {
      for (const Case& c : Cases(seed * 31 + world)) {
        const int32_t count = CandidatesNeeded(c.options, vocab_limit, c.logprobs, c.top_n, kMaxCandidates);
        ASSERT_GT(count, 0) << "top_k " << c.options.top_k;
        const LogitCandidates cand = Candidates(row, world, vocab_limit, count);
        if (!CandidatesCover(cand, c.options, c.top_n)) {
          ++not_covered;
          if (!ties) ++not_covered_untied;
          continue;
        }
        for (uint64_t step = 0; step < 3; ++step) {
          const SampleResult want = SampleToken(row, vocab_limit, c.options, step, nullptr, c.logprobs, c.top_n);
          const SampleResult got = SampleFromCandidates(cand, c.options, step, c.logprobs, c.top_n);
          SCOPED_TRACE(::testing::Message() << "seed " << seed << " world " << world << " T " << c.options.temperature
                                            << " top_k " << c.options.top_k << " top_p " << c.options.top_p
                                            << " min_p " << c.options.min_p << " step " << step);
          ASSERT_EQ(got.token_id, want.token_id);
          ASSERT_LT(got.token_id, vocab_limit);
          if (!c.logprobs) continue;
          EXPECT_NEAR(got.logprob, want.logprob, 1e-5);
          ASSERT_EQ(got.top.size(), want.top.size());
          for (size_t j = 0; j < want.top.size(); ++j) {
            EXPECT_EQ(got.top[j].token_id, want.top[j].token_id) << "top " << j;
            EXPECT_NEAR(got.top[j].logprob, want.top[j].logprob, 1e-5) << "top " << j;
          }
          ++compared;
        }
      }
    }
  }
  // Untied rows are always covered on these seeds (min-p alone could miss a flat tail of
  // more than 64 ids); tied rows fall back to whole rows now and then.
  EXPECT_GT(compared, 1000);
  EXPECT_GT(not_covered, 0);
  std::printf("compared %d with logprobs, %d not covered (%d untied)\n", compared, not_covered, not_covered_untied);
  EXPECT_EQ(not_covered_untied, 0);
}

TEST(SamplerCandidatesTest, GreedyTiesPickTheLowestIdAcrossSlices) {
  std::vector<float> row(64, 0.0f);
  row[40] = 5.0f;
  row[17] = 5.0f;  // the lower id, in the first slice
  row[63] = 5.0f;
  SamplingOptions greedy;
  const LogitCandidates c = Candidates(row, 4, 64, 1);
  ASSERT_TRUE(CandidatesCover(c, greedy, 0));
  EXPECT_EQ(SampleFromCandidates(c, greedy, 0, false, 0).token_id, 17);
  EXPECT_EQ(SampleToken(row, 64, greedy, 0, nullptr, false, 0).token_id, 17);
}

TEST(SamplerCandidatesTest, TiesAtTheTopKCutAreNotCovered) {
  // Ten ids share the 3rd largest value: SampleToken keeps all of them (ties at a threshold
  // are kept), more than the 4 candidates hold, so the caller must fetch the row.
  std::vector<float> row(100, -1.0f);
  row[5] = 3.0f;
  row[50] = 2.0f;
  for (int i = 60; i < 70; ++i) row[i] = 1.0f;
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_k = 3;
  const int32_t count = CandidatesNeeded(o, 100, false, 0, kMaxCandidates);
  EXPECT_EQ(count, 4);
  EXPECT_FALSE(CandidatesCover(Candidates(row, 2, 100, count), o, 0));
  // With enough candidates for all ten tied ids it is covered, and matches.
  const LogitCandidates wide = Candidates(row, 2, 100, 16);
  ASSERT_TRUE(CandidatesCover(wide, o, 0));
  for (uint64_t step = 0; step < 50; ++step) {
    EXPECT_EQ(SampleFromCandidates(wide, o, step, false, 0).token_id,
              SampleToken(row, 100, o, step, nullptr, false, 0).token_id);
  }
}

TEST(SamplerCandidatesTest, WholeRowNeededForPenaltiesPureTemperatureAndLargeK) {
  SamplingOptions o;
  o.repetition_penalty = 1.2f;
  EXPECT_EQ(CandidatesNeeded(o, 1000, false, 0, kMaxCandidates), 0);
  o = {};
  o.temperature = 0.8f;
  EXPECT_EQ(CandidatesNeeded(o, 1000, false, 0, kMaxCandidates), 0);
  o.top_p = 0.9f;
  EXPECT_EQ(CandidatesNeeded(o, 1000, false, 0, kMaxCandidates), 0);
  o.top_k = 64;  // needs 65 candidates
  EXPECT_EQ(CandidatesNeeded(o, 1000, false, 0, kMaxCandidates), 0);
  o.top_k = 40;
  EXPECT_EQ(CandidatesNeeded(o, 1000, true, 50, kMaxCandidates), 50);
  o = {};
  EXPECT_EQ(CandidatesNeeded(o, 1000, false, 0, kMaxCandidates), 1);
  EXPECT_EQ(CandidatesNeeded(o, 1000, true, 80, kMaxCandidates), 0);
}

TEST(SamplerCandidatesTest, LogSumExpCombinesSlicesAndSkipsIdsPastTheLimit) {
  const std::vector<float> row = RandomRow(1024, 9, false);
  const LogitCandidates c = Candidates(row, 4, 1000, 8);
  double max = -1e30, sum = 0;
  for (int i = 0; i < 1000; ++i) max = std::max<double>(max, row[i]);
  for (int i = 0; i < 1000; ++i) sum += std::exp(row[i] - max);
  EXPECT_NEAR(c.log_sum_exp, max + std::log(sum), 1e-9);
  for (int32_t id : c.ids) EXPECT_LT(id, 1000);
  EXPECT_EQ(c.exact, 8);
}

// JoinCandidateSlices: a row selected in uneven slices (a GPU's blocks) and joined is the shard
// SelectCandidates gives over the whole row: ids, values and truncated equal, the log-sum-exp
// within 1e-12; with ties straddling slice boundaries, -0.0 beside +0.0, slices past the
// vocabulary limit, and counts above a slice's width.
TEST(SamplerCandidatesTest, JoinedSlicesEqualTheWholeRowSelection) {
  int joined_rows = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    for (int n : {7, 300, 5000}) {
      std::vector<float> row = RandomRow(n, seed * 31 + n, seed % 2 == 0);
      if (n > 10) {
        row[n / 3] = -0.0f;
        row[n / 3 + 1] = 0.0f;
        row[n / 2] = row[n / 2 - 1] = row[n / 2 + 1];  // a tie across any boundary near n / 2
      }
      for (int32_t limit : {n, n - n / 4}) {
        for (int slices : {2, 3, 7}) {
          for (int32_t count : {1, 5, 64}) {
            SCOPED_TRACE(::testing::Message() << "n " << n << " limit " << limit << " slices " << slices
                                              << " count " << count << " seed " << seed);
            const int width = (n + slices - 1) / slices;
            std::vector<CandidateShard> parts;
            for (int s = 0; s < slices; ++s) {
              const int c0 = std::min(n, s * width), w = std::min(width, n - c0);
              parts.push_back(SelectCandidates(std::span<const float>(row).subspan(c0, w), c0, limit, count));
            }
            const CandidateShard joined = JoinCandidateSlices(parts, count);
            const CandidateShard whole = SelectCandidates(row, 0, limit, count);
            EXPECT_EQ(joined.ids, whole.ids);
            EXPECT_EQ(joined.values, whole.values);
            EXPECT_EQ(joined.truncated, whole.truncated);
            EXPECT_NEAR(joined.log_sum_exp, whole.log_sum_exp, 1e-12 * std::max(1.0, std::abs(whole.log_sum_exp)));
            ++joined_rows;
          }
        }
      }
    }
  }
  EXPECT_EQ(joined_rows, 6 * 3 * 2 * 3 * 3);
}

}  // namespace
}  // namespace phi::worker
