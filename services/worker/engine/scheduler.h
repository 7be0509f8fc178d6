// Chooses what one engine step computes, and owns the waiting and running lists.
//
// Policy, in order, under a per-step token budget (chunked prefill):
//  1. Running sequences, oldest first: one token for a decode, the next chunk of the prompt
//     (or of a recomputation) for a prefill. Each gets the KV blocks its new tokens need;
//     when none is left, the newest running sequence is preempted (its blocks go back, full
//     ones stay in the prefix cache, and it is recomputed later) — possibly the one asking.
//  2. Waiting sequences by priority then arrival, while budget, batch slots and blocks last,
//     and only in steps without preemption (no admitting while evicting). A sequence is
//     admitted only when the blocks for all of its remaining tokens are available, after
//     taking what the prefix cache holds of its prompt (never the block of its last token,
//     whose logits it needs). With the prefix cache on, a waiting sequence whose first full
//     block equals that of a running sequence still computing its prompt (the hash chain
//     starts from the sequence's LoRA adapter, so only the same adapter's) is held back (the
//     sequences behind it are not) until that prefill ends: it then finds the shared blocks
//     in the cache instead of computing them again. The n choices of one request (the same
//     prompt, sent at once) so cost one prefill plus each one's last partial block.
// The oldest running sequence is never preempted for a newer one, and any single request
// fits the cache (checked at admission), so the oldest always progresses: no deadlock.
#ifndef PHI_SERVICES_WORKER_ENGINE_SCHEDULER_H_
#define PHI_SERVICES_WORKER_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <set>
#include <unordered_set>
#include <vector>

#include "services/worker/engine/kv_block_manager.h"
#include "services/worker/engine/sequence.h"

namespace phi::worker {

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;  // fed this step, from seq->num_computed
};

struct StepPlan {
  std::vector<ScheduledSeq> seqs;
  std::vector<Sequence*> admitted;   // left the waiting list this step
  std::vector<Sequence*> preempted;  // went back to it
  uint64_t prefix_queries = 0;       // full prompt blocks looked up by the admitted
  uint64_t prefix_hits = 0;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(KvBlockManager* blocks, int32_t max_batch_tokens, int32_t max_running);

  void AddWaiting(Sequence* seq);
  // Drops a sequence from whichever list holds it and releases its blocks.
  void Remove(Sequence* seq);

  StepPlan Schedule();

  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }

 private:
  struct ByPriorityThenArrival {
    bool operator()(const Sequence* a, const Sequence* b) const {
      if (a->request.priority != b->request.priority) return a->request.priority > b->request.priority;
      return a->arrival < b->arrival;
    }
  };
  struct ByArrival {
    bool operator()(const Sequence* a, const Sequence* b) const { return a->arrival < b->arrival; }
  };

  bool GrowBlocks(Sequence* seq, int32_t num_tokens);  // blocks for [0, num_computed + n)
  void ReleaseBlocks(Sequence* seq);
  void Preempt(Sequence* seq, StepPlan* plan);
  bool TryAdmit(Sequence* seq, int32_t budget, StepPlan* plan);
  // Sharing a prompt's prefill (see the policy above): the first-block hashes of running
  // sequences still prefilling, and whether a waiting one should wait for one of them.
  bool HasFullPromptBlock(const Sequence* seq) const;
  std::unordered_set<uint64_t> PrefillingPrompts();
  // Still computing prompt blocks that identical prompts could take from the prefix cache.
  bool ComputesSharedBlocks(const Sequence* seq) const;
  bool WaitsForSharedPrefill(Sequence* seq, const std::unordered_set<uint64_t>& prefilling);

  KvBlockManager* blocks_;
  int32_t max_batch_tokens_;
  int32_t max_running_;
  std::set<Sequence*, ByPriorityThenArrival> waiting_;
  std::set<Sequence*, ByArrival> running_;  // oldest first
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_SCHEDULER_H_
