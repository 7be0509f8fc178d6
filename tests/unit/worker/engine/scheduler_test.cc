// The scheduler alone: a waiting sequence whose prompt shares its first full block with a
// running sequence still computing that prompt waits for it (then takes the blocks from the
// prefix cache), the sequences behind it are admitted meanwhile, and nothing is held back
// without the prefix cache.
#include "services/worker/engine/scheduler.h"

#include <algorithm>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

namespace phi::worker {
namespace {

constexpr int32_t kBlock = 16;

std::unique_ptr<Sequence> MakeSequence(uint64_t arrival, std::vector<int32_t> prompt) {
  auto seq = std::make_unique<Sequence>();
  seq->arrival = arrival;
  seq->prompt_len = static_cast<int32_t>(prompt.size());
  seq->tokens = std::move(prompt);
  seq->max_new_tokens = 8;
  return seq;
}

std::vector<int32_t> Prompt(int32_t length, int32_t salt) {
  std::vector<int32_t> p(length);
  for (int32_t i = 0; i < length; ++i) p[i] = (i * 7 + salt) % 50;
  return p;
}

bool Contains(const std::vector<Sequence*>& v, const Sequence* s) { return std::find(v.begin(), v.end(), s) != v.end(); }

// What the engine does after a step: the fed tokens are computed, full blocks registered.
void Computed(const StepPlan& plan, KvBlockManager& blocks) {
  for (const ScheduledSeq& s : plan.seqs) {
    s.seq->num_computed += s.num_tokens;
    while ((s.seq->num_registered + 1) * kBlock <= s.seq->num_computed) {
      blocks.RegisterFull(s.seq->blocks[s.seq->num_registered], s.seq->BlockHash(s.seq->num_registered, kBlock),
                          s.seq->hash_root);
      ++s.seq->num_registered;
    }
  }
}

TEST(SchedulerTest, SamePromptWaitsForTheRunningPrefillOthersDoNot) {
  KvBlockManager blocks(64, kBlock, /*enable_prefix_cache=*/true);
  Scheduler scheduler(&blocks, /*max_batch_tokens=*/512, /*max_running=*/16);
  auto first = MakeSequence(0, Prompt(37, 1));
  auto twin = MakeSequence(1, Prompt(37, 1));
  auto other = MakeSequence(2, Prompt(37, 2));
  for (Sequence* s : {first.get(), twin.get(), other.get()}) scheduler.AddWaiting(s);

  const StepPlan step1 = scheduler.Schedule();
  EXPECT_TRUE(Contains(step1.admitted, first.get()));
  EXPECT_FALSE(Contains(step1.admitted, twin.get())) << "the twin must wait for the first's prefill";
  EXPECT_TRUE(Contains(step1.admitted, other.get())) << "a different prompt is not held up";
  Computed(step1, blocks);

  const StepPlan step2 = scheduler.Schedule();  // the first's prefill is done: 32 tokens cached
  ASSERT_TRUE(Contains(step2.admitted, twin.get()));
  EXPECT_EQ(twin->cached_prompt_tokens, 32);
  const auto planned = std::find_if(step2.seqs.begin(), step2.seqs.end(),
                                    [&](const ScheduledSeq& s) { return s.seq == twin.get(); });
  ASSERT_NE(planned, step2.seqs.end());
  EXPECT_EQ(planned->num_tokens, 5);  // only the last, partial block is computed
}

TEST(SchedulerTest, TwinsFinishingOnlyTheirTailHoldNobodyBack) {
  // 8 identical prompts (a shared system prompt): once the first has computed the full
  // blocks, every other twin is admitted in the same step, not one per step.
  KvBlockManager blocks(128, kBlock, true);
  Scheduler scheduler(&blocks, /*max_batch_tokens=*/512, /*max_running=*/16);
  std::vector<std::unique_ptr<Sequence>> twins;
  for (int i = 0; i < 8; ++i) {
    twins.push_back(MakeSequence(i, Prompt(37, 4)));
    scheduler.AddWaiting(twins.back().get());
  }
  const StepPlan step1 = scheduler.Schedule();
  EXPECT_EQ(step1.admitted.size(), 1u);
  Computed(step1, blocks);
  twins[0]->tokens.push_back(1);  // sampled its first token
  const StepPlan step2 = scheduler.Schedule();
  EXPECT_EQ(step2.admitted.size(), 7u) << "twins that only compute their tail must not hold each other";
  for (int i = 1; i < 8; ++i) EXPECT_EQ(twins[i]->cached_prompt_tokens, 32) << i;
}

TEST(SchedulerTest, ChunkedPrefillHoldsTheTwinUntilItEnds) {
  KvBlockManager blocks(64, kBlock, true);
  Scheduler scheduler(&blocks, /*max_batch_tokens=*/24, 16);
  auto first = MakeSequence(0, Prompt(70, 3));
  auto twin = MakeSequence(1, Prompt(70, 3));
  scheduler.AddWaiting(first.get());
  scheduler.AddWaiting(twin.get());
  int steps = 0;
  while (first->num_computed < first->prompt_len) {
    const StepPlan plan = scheduler.Schedule();
    EXPECT_FALSE(Contains(plan.admitted, twin.get())) << "step " << steps;
    Computed(plan, blocks);
    ASSERT_LT(++steps, 10);
  }
  EXPECT_EQ(steps, 3);  // 70 tokens in chunks of 24
  // The first now decodes (one token a step); the twin comes in with 64 tokens cached.
  first->tokens.push_back(1);
  const StepPlan plan = scheduler.Schedule();
  EXPECT_TRUE(Contains(plan.admitted, twin.get()));
  EXPECT_EQ(twin->cached_prompt_tokens, 64);
}

// The same prompt under two LoRA adapters (or an adapter and the base) computes different KV:
// it shares nothing, so it is not held back for the other's prefill, and its blocks are its own.
TEST(SchedulerTest, TwinsOfDifferentAdaptersAreNotPaired) {
  KvBlockManager blocks(64, kBlock, true);
  Scheduler scheduler(&blocks, 512, 16);
  auto base = MakeSequence(0, Prompt(37, 1));
  auto dpo = MakeSequence(1, Prompt(37, 1));
  auto dpo_twin = MakeSequence(2, Prompt(37, 1));
  dpo->hash_root = dpo_twin->hash_root = common::PrefixHashRoot("dpo");
  for (Sequence* s : {base.get(), dpo.get(), dpo_twin.get()}) scheduler.AddWaiting(s);
  const StepPlan step1 = scheduler.Schedule();
  EXPECT_TRUE(Contains(step1.admitted, base.get()));
  EXPECT_TRUE(Contains(step1.admitted, dpo.get())) << "another adapter's prefill is no twin";
  EXPECT_FALSE(Contains(step1.admitted, dpo_twin.get())) << "the same adapter's is";
  Computed(step1, blocks);
  EXPECT_EQ(blocks.num_cached(), 4);  // 2 full blocks each for base and dpo, none shared
  const StepPlan step2 = scheduler.Schedule();
  ASSERT_TRUE(Contains(step2.admitted, dpo_twin.get()));
  EXPECT_EQ(dpo_twin->cached_prompt_tokens, 32);
  for (int32_t i = 0; i < 2; ++i) EXPECT_EQ(dpo_twin->blocks[i], dpo->blocks[i]);
  EXPECT_NE(dpo->blocks[0], base->blocks[0]);
}

TEST(SchedulerTest, NothingIsHeldBackWithoutThePrefixCache) {
  KvBlockManager blocks(64, kBlock, /*enable_prefix_cache=*/false);
  Scheduler scheduler(&blocks, 512, 16);
  auto first = MakeSequence(0, Prompt(37, 1));
  auto twin = MakeSequence(1, Prompt(37, 1));
  scheduler.AddWaiting(first.get());
  scheduler.AddWaiting(twin.get());
  const StepPlan plan = scheduler.Schedule();
  EXPECT_TRUE(Contains(plan.admitted, first.get()));
  EXPECT_TRUE(Contains(plan.admitted, twin.get()));
}

TEST(SchedulerTest, ShortPromptsWithoutAFullBlockAreNotHeld) {
  KvBlockManager blocks(64, kBlock, true);
  Scheduler scheduler(&blocks, 512, 16);
  auto first = MakeSequence(0, Prompt(16, 1));  // its only full block holds its last token
  auto twin = MakeSequence(1, Prompt(16, 1));
  scheduler.AddWaiting(first.get());
  scheduler.AddWaiting(twin.get());
  const StepPlan plan = scheduler.Schedule();
  EXPECT_TRUE(Contains(plan.admitted, twin.get()));
}

}  // namespace
}  // namespace phi::worker
