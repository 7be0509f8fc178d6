#include "services/worker/engine/scheduler.h"

#include <algorithm>
#include <iterator>
#include <unordered_set>

namespace phi::worker {
namespace {

int32_t CeilDiv(int32_t a, int32_t b) { return (a + b - 1) / b; }

}  // namespace

Scheduler::Scheduler(KvBlockManager* blocks, int32_t max_batch_tokens, int32_t max_running)
    : blocks_(blocks), max_batch_tokens_(max_batch_tokens), max_running_(max_running) {}

void Scheduler::AddWaiting(Sequence* seq) { waiting_.insert(seq); }

void Scheduler::Remove(Sequence* seq) {
  ReleaseBlocks(seq);
  waiting_.erase(seq);
  running_.erase(seq);
  seq->running = false;
}

void Scheduler::ReleaseBlocks(Sequence* seq) {
  // Last block first: the LRU then evicts a prefix's tail before its head, and the head is
  // what later requests can share.
  for (auto it = seq->blocks.rbegin(); it != seq->blocks.rend(); ++it) blocks_->Release(*it);
  seq->blocks.clear();
  seq->num_registered = 0;
}

bool Scheduler::GrowBlocks(Sequence* seq, int32_t num_tokens) {
  const int32_t needed = CeilDiv(seq->num_computed + num_tokens, blocks_->block_size());
  while (static_cast<int32_t>(seq->blocks.size()) < needed) {
    std::optional<int32_t> block = blocks_->Allocate();
    if (!block) return false;
    seq->blocks.push_back(*block);
  }
  return true;
}

void Scheduler::Preempt(Sequence* seq, StepPlan* plan) {
  ReleaseBlocks(seq);
  seq->num_computed = 0;
  if (seq->wants_prompt_logits()) seq->prompt_logprobs.clear();
  running_.erase(seq);
  seq->running = false;
  waiting_.insert(seq);
  plan->preempted.push_back(seq);
  auto planned = std::find_if(plan->seqs.begin(), plan->seqs.end(),
                              [&](const ScheduledSeq& s) { return s.seq == seq; });
  if (planned != plan->seqs.end()) plan->seqs.erase(planned);
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  // Tokens planned so far, kept as a running count (summing plan.seqs for every sequence was
  // quadratic: ~65k additions a step at 256 sequences), recounted after a preemption, which
  // can drop a sequence already planned.
  int32_t used = 0;
  auto recount = [&] {
    used = 0;
    for (const ScheduledSeq& s : plan.seqs) used += s.num_tokens;
  };
  // Decodes first so that long prefills never starve them, then prefill chunks.
  for (bool decode_pass : {true, false}) {
    auto it = running_.begin();
    while (it != running_.end()) {
      const int32_t budget = max_batch_tokens_ - used;
      if (budget <= 0) break;
      Sequence* seq = *it;
      const bool is_decode = seq->remaining() == 1;
      if (is_decode != decode_pass) {
        ++it;
        continue;
      }
      const int32_t n = std::min(seq->remaining(), budget);
      bool preempted_self = false;
      while (!GrowBlocks(seq, n)) {
        Sequence* victim = *std::prev(running_.end());
        preempted_self = victim == seq;
        Preempt(victim, &plan);
        recount();
        if (preempted_self) break;
      }
      if (preempted_self) break;  // it was the newest: nothing after it in this pass
      plan.seqs.push_back({seq, n});
      used += n;
      ++it;
    }
  }

  if (!plan.preempted.empty()) return plan;
  int32_t budget = max_batch_tokens_ - used;
  const bool share_prefill = blocks_->prefix_cache_enabled();
  std::unordered_set<uint64_t> prefilling = PrefillingPrompts();
  auto it = waiting_.begin();
  while (budget > 0 && static_cast<int32_t>(running_.size()) < max_running_ && it != waiting_.end()) {
    Sequence* seq = *it;
    if (WaitsForSharedPrefill(seq, prefilling)) {
      ++it;  // held back; the requests behind it are not
      continue;
    }
    const auto next = std::next(it);  // TryAdmit erases `it` only
    if (!TryAdmit(seq, budget, &plan)) break;
    budget -= plan.seqs.back().num_tokens;
    if (share_prefill && ComputesSharedBlocks(seq)) prefilling.insert(seq->BlockHash(0, blocks_->block_size()));
    it = next;
  }
  return plan;
}

bool Scheduler::ComputesSharedBlocks(const Sequence* seq) const {
  // Only the full blocks before the last token's are shared through the cache: a sequence
  // that has them all (from the cache or computed) is finishing its own tail, and holding
  // back the identical prompts behind it would admit them one per step.
  const int32_t shareable = (seq->prompt_len - 1) / blocks_->block_size();
  return seq->prefilling() && shareable >= 1 && seq->num_registered < shareable;
}

bool Scheduler::HasFullPromptBlock(const Sequence* seq) const {
  // The block holding the last token is never taken from the cache (its logits are needed).
  return (static_cast<int32_t>(seq->tokens.size()) - 1) / blocks_->block_size() >= 1;
}

std::unordered_set<uint64_t> Scheduler::PrefillingPrompts() {
  std::unordered_set<uint64_t> hashes;
  if (!blocks_->prefix_cache_enabled() || waiting_.empty()) return hashes;
  for (Sequence* seq : running_) {
    if (ComputesSharedBlocks(seq)) hashes.insert(seq->BlockHash(0, blocks_->block_size()));
  }
  return hashes;
}

bool Scheduler::WaitsForSharedPrefill(Sequence* seq, const std::unordered_set<uint64_t>& prefilling) {
  if (prefilling.empty() || seq->wants_prompt_logits() || !HasFullPromptBlock(seq)) return false;
  return prefilling.count(seq->BlockHash(0, blocks_->block_size())) > 0;
}

bool Scheduler::TryAdmit(Sequence* seq, int32_t budget, StepPlan* plan) {
  const int32_t bs = blocks_->block_size();
  const int32_t total = static_cast<int32_t>(seq->tokens.size());
  std::vector<int32_t> matched;
  int32_t queried = 0;
  if (!seq->wants_prompt_logits()) {
    queried = (total - 1) / bs;  // never the block holding the last token: its logits are needed
    std::vector<uint64_t> hashes(queried);
    for (int32_t i = 0; i < queried; ++i) hashes[i] = seq->BlockHash(i, bs);
    matched = blocks_->AcquirePrefix(hashes);
  }
  const int32_t needed = CeilDiv(total, bs) - static_cast<int32_t>(matched.size());
  if (needed > blocks_->num_available()) {
    for (auto it = matched.rbegin(); it != matched.rend(); ++it) blocks_->Release(*it);
    return false;
  }
  waiting_.erase(seq);
  seq->blocks = std::move(matched);
  seq->num_registered = static_cast<int32_t>(seq->blocks.size());
  seq->num_computed = seq->num_registered * bs;
  if (seq->cached_prompt_tokens < 0) {  // first admission: what the client is told
    seq->cached_prompt_tokens = std::min(seq->num_computed, seq->prompt_len);
    plan->prefix_queries += queried;
    plan->prefix_hits += seq->num_registered;
  }
  const int32_t n = std::min(seq->remaining(), budget);
  GrowBlocks(seq, n);  // cannot fail: `needed` blocks were available
  running_.insert(seq);
  seq->running = true;
  plan->seqs.push_back({seq, n});
  plan->admitted.push_back(seq);
  return true;
}

}  // namespace phi::worker
