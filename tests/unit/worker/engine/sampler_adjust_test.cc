// LogitAdjust in SampleToken: logit_bias, the min_new_tokens ban and the grammar mask change
// which token is chosen (greedy and sampled, over many seeds), never the logprobs; an
// all-allowing adjustment changes nothing; rows with an adjustment need the whole row.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "services/worker/engine/sampler.h"
#include "services/worker/engine/token_constraint.h"
#include "tests/unit/worker/engine/engine_test_util.h"

namespace phi::worker {
namespace {

using testing::RandomLogits;

std::vector<uint32_t> MaskOf(int32_t vocab, const std::vector<int32_t>& allowed) {
  std::vector<uint32_t> words(TokenMaskWords(vocab), 0u);
  for (int32_t id : allowed) words[id / 32] |= 1u << (id % 32);
  return words;
}

int32_t ArgMaxOf(const std::vector<float>& l) {
  return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
}

std::vector<SamplingOptions> OptionSets() {
  std::vector<SamplingOptions> sets;
  SamplingOptions o;
  sets.push_back(o);  // greedy
  o.temperature = 1.0f;
  sets.push_back(o);
  o.top_k = 5;
  sets.push_back(o);
  o.top_k = 0;
  o.top_p = 0.8f;
  sets.push_back(o);
  o.top_p = 1.0f;
  o.min_p = 0.05f;
  sets.push_back(o);
  o.min_p = 0.0f;
  o.temperature = 0.7f;
  o.repetition_penalty = 1.3f;
  o.presence_penalty = 0.5f;
  sets.push_back(o);
  return sets;
}

TEST(SamplerAdjustTest, PlusHundredBiasForcesAToken) {
  const std::vector<float> l = RandomLogits(500, 1);
  const int32_t target = static_cast<int32_t>(std::min_element(l.begin(), l.end()) - l.begin());
  const std::vector<TokenBias> bias = {{target, 100.0f}};
  PenaltyHistory h;
  h.AddPrompt(std::vector<int32_t>{1, 2, 3});
  for (const SamplingOptions& o : OptionSets()) {
    for (uint64_t seed = 0; seed < 200; ++seed) {
      SamplingOptions s = o;
      s.seed = seed;
      ASSERT_EQ(SampleToken(l, 500, s, seed % 7, &h, false, 0, {.bias = bias}).token_id, target)
          << "temperature " << o.temperature << " seed " << seed;
    }
  }
}

TEST(SamplerAdjustTest, MinusHundredBiasForbidsAToken) {
  const std::vector<float> l = RandomLogits(50, 2, 1.0f);
  const int32_t top = ArgMaxOf(l);
  const std::vector<TokenBias> bias = {{top, -100.0f}};
  for (const SamplingOptions& o : OptionSets()) {
    int forbidden = 0, top_unbiased = 0;
    for (uint64_t seed = 0; seed < 2000; ++seed) {
      SamplingOptions s = o;
      s.seed = seed;
      forbidden += SampleToken(l, 50, s, 0, nullptr, false, 0, {.bias = bias}).token_id == top;
      top_unbiased += SampleToken(l, 50, s, 0, nullptr, false, 0).token_id == top;
    }
    EXPECT_EQ(forbidden, 0) << "temperature " << o.temperature;
    EXPECT_GT(top_unbiased, 0) << "the test must be able to fail";
  }
}

TEST(SamplerAdjustTest, BanRemovesEosAndStopIds) {
  const std::vector<float> l = RandomLogits(64, 3, 1.0f);
  const int32_t top = ArgMaxOf(l);
  const std::vector<int32_t> banned = {top, 7, 9};
  for (const SamplingOptions& o : OptionSets()) {
    for (uint64_t seed = 0; seed < 1000; ++seed) {
      SamplingOptions s = o;
      s.seed = seed;
      const int32_t t = SampleToken(l, 64, s, seed, nullptr, false, 0, {.banned = banned}).token_id;
      ASSERT_TRUE(std::find(banned.begin(), banned.end(), t) == banned.end()) << t;
    }
  }
}

TEST(SamplerAdjustTest, MaskIsRespectedGreedyAndSampled) {
  constexpr int32_t kVocab = 1000;
  std::mt19937_64 rng(4);
  for (int trial = 0; trial < 20; ++trial) {
    const std::vector<float> l = RandomLogits(kVocab, 100 + trial);
    std::vector<int32_t> allowed;
    for (int32_t id = 0; id < kVocab; ++id) {
      if (rng() % 10 == 0) allowed.push_back(id);
    }
    const std::vector<uint32_t> mask = MaskOf(kVocab, allowed);
    int32_t want_greedy = allowed[0];
    for (int32_t id : allowed) {
      if (l[id] > l[want_greedy]) want_greedy = id;
    }
    PenaltyHistory h;
    h.AddPrompt(std::vector<int32_t>{want_greedy});
    h.AddOutput(allowed[1]);
    for (const SamplingOptions& o : OptionSets()) {
      for (uint64_t seed = 0; seed < 200; ++seed) {
        SamplingOptions s = o;
        s.seed = seed;
        const int32_t t = SampleToken(l, kVocab, s, seed, &h, false, 0, {.allowed = mask}).token_id;
        ASSERT_TRUE(std::binary_search(allowed.begin(), allowed.end(), t)) << "trial " << trial << " token " << t;
        if (o.greedy()) {
          ASSERT_EQ(t, want_greedy);
        }
      }
    }
  }
}

TEST(SamplerAdjustTest, MaskedSamplingFollowsTheSoftmaxOverAllowedIds) {
  const std::vector<float> l = {1.0f, 3.0f, 0.5f, 2.0f, 0.0f, 2.5f};
  const std::vector<int32_t> allowed = {0, 2, 3, 4};
  const std::vector<uint32_t> mask = MaskOf(6, allowed);
  SamplingOptions o;
  o.temperature = 1.0f;
  o.seed = 11;
  constexpr int kDraws = 40000;
  std::vector<int> counts(6, 0);
  for (int i = 0; i < kDraws; ++i) ++counts[SampleToken(l, 6, o, i, nullptr, false, 0, {.allowed = mask}).token_id];
  double z = 0;
  for (int32_t id : allowed) z += std::exp(l[id]);
  EXPECT_EQ(counts[1] + counts[5], 0);
  for (int32_t id : allowed) EXPECT_NEAR(counts[id] / static_cast<double>(kDraws), std::exp(l[id]) / z, 0.01) << id;
}

TEST(SamplerAdjustTest, LogprobsStayTheModelsOwn) {
  const std::vector<float> l = RandomLogits(300, 5);
  const std::vector<TokenBias> bias = {{3, 50.0f}, {10, -20.0f}};
  const std::vector<int32_t> banned = {ArgMaxOf(l)};
  const std::vector<uint32_t> mask = MaskOf(300, {3, 4, 5, 10, 200, 299});
  const LogitAdjust adjust{bias, banned, mask};
  for (const SamplingOptions& o : OptionSets()) {
    SamplingOptions s = o;
    s.seed = 9;
    const SampleResult plain = SampleToken(l, 300, s, 0, nullptr, true, 5);
    const SampleResult adjusted = SampleToken(l, 300, s, 0, nullptr, true, 5, adjust);
    const SampleResult scored = ScoreToken(l, 300, adjusted.token_id, 5);
    EXPECT_EQ(adjusted.logprob, scored.logprob);
    ASSERT_EQ(adjusted.top.size(), plain.top.size());
    for (size_t j = 0; j < plain.top.size(); ++j) {
      EXPECT_EQ(adjusted.top[j].token_id, plain.top[j].token_id);
      EXPECT_EQ(adjusted.top[j].logprob, plain.top[j].logprob);
    }
  }
}

// An adjustment that changes nothing takes the other code paths (the adjusted copy, the
// in-place argmax) and must give exactly the tokens of the plain row.
TEST(SamplerAdjustTest, AllowingEverythingChangesNoToken) {
  constexpr int32_t kVocab = 5000;
  std::vector<int32_t> all(kVocab);
  for (int32_t i = 0; i < kVocab; ++i) all[i] = i;
  const std::vector<uint32_t> mask = MaskOf(kVocab, all);
  const std::vector<TokenBias> zero_bias = {{17, 0.0f}};
  PenaltyHistory h;
  h.AddPrompt(std::vector<int32_t>{1, 5, 17});
  h.AddOutput(5);
  for (int trial = 0; trial < 5; ++trial) {
    const std::vector<float> l = RandomLogits(kVocab, 200 + trial);
    for (const SamplingOptions& o : OptionSets()) {
      for (uint64_t step = 0; step < 50; ++step) {
        SamplingOptions s = o;
        s.seed = 1000 + trial;
        const int32_t want = SampleToken(l, kVocab, s, step, &h, false, 0).token_id;
        ASSERT_EQ(SampleToken(l, kVocab, s, step, &h, false, 0, {.allowed = mask}).token_id, want);
        ASSERT_EQ(SampleToken(l, kVocab, s, step, &h, false, 0, {.bias = zero_bias}).token_id, want);
      }
    }
  }
}

TEST(SamplerAdjustTest, BanYieldsWhenTheMaskAllowsOnlyBannedIds) {
  const std::vector<float> l = RandomLogits(64, 6);
  const std::vector<int32_t> eos = {50};
  const std::vector<uint32_t> mask = MaskOf(64, {50});
  for (const SamplingOptions& o : OptionSets()) {
    SamplingOptions s = o;
    s.seed = 3;
    EXPECT_EQ(SampleToken(l, 64, s, 0, nullptr, false, 0, {.banned = eos, .allowed = mask}).token_id, 50);
  }
  // With another id allowed the ban holds.
  const std::vector<uint32_t> two = MaskOf(64, {20, 50});
  SamplingOptions greedy;
  EXPECT_EQ(SampleToken(l, 64, greedy, 0, nullptr, false, 0, {.banned = eos, .allowed = two}).token_id, 20);
}

TEST(SamplerAdjustTest, BiasIsAppliedBeforeTheMask) {
  const std::vector<float> l = RandomLogits(64, 7);
  const std::vector<TokenBias> bias = {{40, 100.0f}};
  const std::vector<uint32_t> mask = MaskOf(64, {1, 2, 3});
  for (const SamplingOptions& o : OptionSets()) {
    SamplingOptions s = o;
    s.seed = 4;
    const int32_t t = SampleToken(l, 64, s, 0, nullptr, false, 0, {.bias = bias, .allowed = mask}).token_id;
    EXPECT_TRUE(t >= 1 && t <= 3) << t;
  }
}

TEST(SamplerAdjustTest, AdjustedRowsNeedTheWholeRow) {
  SamplingOptions greedy;
  const std::vector<TokenBias> bias = {{1, 1.0f}};
  const std::vector<int32_t> banned = {2};
  const std::vector<uint32_t> mask = MaskOf(1000, {1});
  EXPECT_EQ(CandidatesNeeded(greedy, 1000, false, 0, 64), 1);
  EXPECT_EQ(CandidatesNeeded(greedy, 1000, false, 0, 64, {.bias = bias}), 0);
  EXPECT_EQ(CandidatesNeeded(greedy, 1000, false, 0, 64, {.banned = banned}), 0);
  EXPECT_EQ(CandidatesNeeded(greedy, 1000, false, 0, 64, {.allowed = mask}), 0);
}

}  // namespace
}  // namespace phi::worker
