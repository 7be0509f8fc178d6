#include "services/worker/engine/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "services/worker/engine/philox.h"
#include "tests/unit/worker/engine/engine_test_util.h"

namespace phi::worker {
namespace {

using testing::RandomLogits;

std::vector<double> Softmax(const std::vector<float>& l, float temperature) {
  double max = -1e30;
  for (float v : l) max = std::max<double>(max, v / temperature);
  std::vector<double> p(l.size());
  double sum = 0;
  for (size_t i = 0; i < l.size(); ++i) sum += p[i] = std::exp(l[i] / temperature - max);
  for (auto& v : p) v /= sum;
  return p;
}

TEST(PhiloxTest, MatchesRandom123KnownAnswer) {
  // Random123 kat_vectors: philox4x32 10 rounds, counter 0, key 0.
  const auto r = Philox4x32x10(0, 0);
  EXPECT_EQ(r[0], 0x6627e8d5u);
  EXPECT_EQ(r[1], 0xe169c58du);
  EXPECT_EQ(r[2], 0xbc57ac4cu);
  EXPECT_EQ(r[3], 0x9b00dbd8u);
}

TEST(PhiloxTest, UniformIsInUnitIntervalAndDependsOnSeedAndCounter) {
  EXPECT_NE(PhiloxUniform(1, 0), PhiloxUniform(2, 0));
  EXPECT_NE(PhiloxUniform(1, 0), PhiloxUniform(1, 1));
  EXPECT_EQ(PhiloxUniform(7, 9), PhiloxUniform(7, 9));
  double sum = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    const float u = PhiloxUniform(42, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(SamplerTest, GreedyIsArgmaxWithLowestIdOnTies) {
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  SamplingOptions o;
  EXPECT_EQ(SampleToken(l, 5, o, 0, nullptr, false, 0).token_id, 1);
}

TEST(SamplerTest, NeverSamplesPastTheTokenizerVocabulary) {
  std::vector<float> l = RandomLogits(64, 1);
  l[62] = 100.0f;  // by far the most likely, but not a real token
  SamplingOptions o;
  EXPECT_LT(SampleToken(l, 60, o, 0, nullptr, true, 5).token_id, 60);
  o.temperature = 5.0f;
  for (uint64_t step = 0; step < 2000; ++step) {
    o.seed = step;
    ASSERT_LT(SampleToken(l, 60, o, step, nullptr, false, 0).token_id, 60);
  }
  for (const auto& t : SampleToken(l, 60, o, 0, nullptr, true, 20).top) EXPECT_LT(t.token_id, 60);
}

TEST(SamplerTest, TemperatureSamplingFollowsTheSoftmax) {
  const std::vector<float> l = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f};
  SamplingOptions o;
  o.temperature = 0.7f;
  o.seed = 1234;
  const int kDraws = 40000;
  std::vector<int> counts(l.size());
  for (int i = 0; i < kDraws; ++i) ++counts[SampleToken(l, 6, o, i, nullptr, false, 0).token_id];
  const std::vector<double> p = Softmax(l, o.temperature);
  for (size_t i = 0; i < l.size(); ++i) {
    const double sigma = std::sqrt(p[i] * (1 - p[i]) / kDraws);
    EXPECT_NEAR(static_cast<double>(counts[i]) / kDraws, p[i], 5 * sigma + 1e-4) << "token " << i;
  }
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  const std::vector<float> l = RandomLogits(100, 2);
  std::vector<int> order(100);
  for (int i = 0; i < 100; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
  SamplingOptions o;
  o.temperature = 2.0f;
  o.top_k = 5;
  std::map<int, int> seen;
  for (int i = 0; i < 5000; ++i) ++seen[SampleToken(l, 100, o, i, nullptr, false, 0).token_id];
  EXPECT_EQ(seen.size(), 5u);
  for (int j = 0; j < 5; ++j) EXPECT_GT(seen[order[j]], 0) << "rank " << j;
  o.top_k = 1;
  for (int i = 0; i < 100; ++i) ASSERT_EQ(SampleToken(l, 100, o, i, nullptr, false, 0).token_id, order[0]);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // Probabilities (T=1): ~0.64, 0.24, 0.09, 0.03 -> top_p 0.8 keeps the first two.
  const std::vector<float> l = {3.0f, 2.0f, 1.0f, 0.0f};
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.8f;
  std::map<int, int> seen;
  const int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) ++seen[SampleToken(l, 4, o, i, nullptr, false, 0).token_id];
  EXPECT_EQ(seen.size(), 2u);
  const std::vector<double> p = Softmax(l, 1.0f);
  const double p0 = p[0] / (p[0] + p[1]);
  EXPECT_NEAR(static_cast<double>(seen[0]) / kDraws, p0, 0.02);
  o.top_p = 0.01f;
  for (int i = 0; i < 100; ++i) ASSERT_EQ(SampleToken(l, 4, o, i, nullptr, false, 0).token_id, 0);
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheTop) {
  const std::vector<float> l = {0.0f, std::log(0.5f), std::log(0.2f), std::log(0.05f)};
  SamplingOptions o;
  o.temperature = 1.0f;
  o.min_p = 0.1f;  // keeps relative probabilities 1, 0.5, 0.2; drops 0.05
  std::map<int, int> seen;
  for (int i = 0; i < 5000; ++i) ++seen[SampleToken(l, 4, o, i, nullptr, false, 0).token_id];
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen.count(3), 0u);
}

TEST(SamplerTest, RepetitionPenaltyIsTransformersDefinition) {
  // transformers: score = where(score < 0, score * penalty, score / penalty) on seen tokens.
  std::vector<float> l = {2.0f, 1.9f, -0.5f, -0.6f};
  PenaltyHistory h;
  const int32_t prompt[] = {0};
  h.AddPrompt(prompt);
  SamplingOptions o;
  o.repetition_penalty = 1.2f;  // 2.0 / 1.2 = 1.67 < 1.9: token 1 wins
  EXPECT_EQ(SampleToken(l, 4, o, 0, &h, false, 0).token_id, 1);
  // Negative logits are multiplied: -0.5 * 3 = -1.5 < -0.6.
  l = {-0.5f, -0.6f, -5.0f, -5.0f};
  o.repetition_penalty = 3.0f;
  EXPECT_EQ(SampleToken(l, 4, o, 0, &h, false, 0).token_id, 1);
  // The reported logprob is the model's own, before the penalty.
  const SampleResult r = SampleToken(l, 4, o, 0, &h, true, 0);
  const double lse = std::log(std::exp(-0.5) + std::exp(-0.6) + 2 * std::exp(-5.0));
  EXPECT_NEAR(r.logprob, -0.6 - lse, 1e-5);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesAreOpenAIDefinitions) {
  // logit -= frequency * count + presence * (count > 0), output tokens only.
  const std::vector<float> l = {3.0f, 2.0f, 0.0f};
  PenaltyHistory h;
  const int32_t prompt[] = {1};
  h.AddPrompt(prompt);  // the prompt does not count for these penalties
  h.AddOutput(0);
  h.AddOutput(0);
  SamplingOptions o;
  o.frequency_penalty = 0.4f;  // 3 - 0.8 = 2.2 > 2: still 0
  EXPECT_EQ(SampleToken(l, 3, o, 0, &h, false, 0).token_id, 0);
  o.presence_penalty = 0.3f;   // 3 - 0.8 - 0.3 = 1.9 < 2: now 1
  EXPECT_EQ(SampleToken(l, 3, o, 0, &h, false, 0).token_id, 1);
  o = SamplingOptions();
  o.frequency_penalty = -2.0f;  // negative penalties encourage repetition
  const std::vector<float> l2 = {0.0f, 3.0f, 0.0f};
  EXPECT_EQ(SampleToken(l2, 3, o, 0, &h, false, 0).token_id, 0);
}

TEST(SamplerTest, SameSeedAndStepGiveTheSameToken) {
  const std::vector<float> l = RandomLogits(1000, 3);
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.9f;
  o.top_k = 50;
  o.seed = 77;
  std::map<int, int> distinct;
  for (uint64_t step = 0; step < 50; ++step) {
    const int32_t a = SampleToken(l, 1000, o, step, nullptr, false, 0).token_id;
    const int32_t b = SampleToken(l, 1000, o, step, nullptr, false, 0).token_id;
    ASSERT_EQ(a, b);
    ++distinct[a];
  }
  EXPECT_GT(distinct.size(), 3u);  // and the steps do draw different numbers
}

TEST(SamplerTest, LogprobsAreTheLogSoftmaxAndTopIsSorted) {
  const std::vector<float> l = RandomLogits(300, 4);
  SamplingOptions o;
  const SampleResult r = SampleToken(l, 300, o, 0, nullptr, true, 7);
  double sum = 0;
  for (float v : l) sum += std::exp(static_cast<double>(v));
  EXPECT_NEAR(r.logprob, l[r.token_id] - std::log(sum), 1e-5);
  ASSERT_EQ(r.top.size(), 7u);
  EXPECT_EQ(r.top[0].token_id, r.token_id);  // greedy picks the most likely
  for (size_t j = 1; j < r.top.size(); ++j) EXPECT_GE(r.top[j - 1].logprob, r.top[j].logprob);
  for (const auto& t : r.top) EXPECT_NEAR(t.logprob, l[t.token_id] - std::log(sum), 1e-5);
  const SampleResult s = ScoreToken(l, 300, 17, 3);
  EXPECT_NEAR(s.logprob, l[17] - std::log(sum), 1e-5);
  EXPECT_EQ(s.top.size(), 3u);
}

}  // namespace
}  // namespace phi::worker

namespace phi::worker {
namespace {

// The nucleus search sorts only candidates near the top; it must keep exactly the tokens a
// full sort keeps, on peaked and flat rows alike.
TEST(SamplerTest, TopPMatchesAFullSortOnPeakedAndFlatRows) {
  for (float scale : {0.01f, 1.0f, 6.0f, 30.0f}) {
    const std::vector<float> l = RandomLogits(5000, 17, scale);
    for (float top_p : {0.05f, 0.5f, 0.9f, 0.999f}) {
      std::vector<double> p = Softmax(l, 1.0f);
      std::vector<int> order(l.size());
      for (size_t i = 0; i < l.size(); ++i) order[i] = static_cast<int>(i);
      std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
      double cum = 0;
      size_t k = 0;
      while (k < order.size() && cum < top_p) cum += p[order[k++]];
      const float boundary = l[order[k - 1]];
      SamplingOptions o;
      o.temperature = 1.0f;
      o.top_p = top_p;
      for (int i = 0; i < 60; ++i) {
        const int32_t t = SampleToken(l, 5000, o, i, nullptr, false, 0).token_id;
        ASSERT_GE(l[t], boundary) << "scale " << scale << " top_p " << top_p;
      }
    }
  }
}

}  // namespace
}  // namespace phi::worker
