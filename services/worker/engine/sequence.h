// One request's state inside the engine thread: its tokens (prompt then generated), how many
// of them have KV in the cache, its block table and its timings.
#ifndef PHI_SERVICES_WORKER_ENGINE_SEQUENCE_H_
#define PHI_SERVICES_WORKER_ENGINE_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "services/common/prefix_hash.h"
#include "services/worker/engine/request.h"
#include "services/worker/engine/sampler.h"

namespace phi::worker {

struct AdapterMetrics;  // engine_metrics.h

struct Sequence {
  std::shared_ptr<RequestStream> stream;
  GenerationRequest request;
  uint64_t arrival = 0;          // arrival order: the newest running sequence is preempted first
  int32_t max_new_tokens = 0;    // after the default and the context clamp
  bool max_new_clamped = false;  // max_new_tokens was cut to the context: report kContextLength
  uint64_t seed = 0;

  std::vector<int32_t> tokens;   // prompt then generated
  int32_t prompt_len = 0;
  // Positions [0, num_computed) have KV in `blocks`. The next step feeds tokens from here.
  int32_t num_computed = 0;
  std::vector<int32_t> blocks;
  // Leading blocks that are in the prefix cache (found there or registered after filling).
  int32_t num_registered = 0;
  std::vector<uint64_t> block_hashes;  // chained hash of each full block of `tokens`, memoised
  // The chain's root: common::PrefixHashRoot(request.adapter), so sequences of different
  // adapters (or of an adapter and the base) never share a cached block, nor a prefill.
  uint64_t hash_root = common::kPrefixHashRoot;
  // The runner slot of its LoRA adapter (SequenceStep::adapter_slot; 0: the base model),
  // held from Submit to the request's end (Engine: slot assignment).
  int32_t adapter_slot = 0;
  const AdapterMetrics* adapter_metrics = nullptr;  // its series of the adapter-labelled metrics
  int32_t cached_prompt_tokens = -1;   // prompt tokens found in the cache at first admission

  PenaltyHistory penalties;
  // Eos (unless ignore_eos) and stop token ids: banned while generated() < min_new_tokens.
  std::vector<int32_t> min_tokens_ban;
  // The constraint's allowed-token bitmask for the next token (TokenMaskWords(vocab) words),
  // filled during the step that samples it.
  std::vector<uint32_t> token_mask;
  std::vector<PositionLogprob> prompt_logprobs;  // gathered during prefill, sent with token 1
  bool prompt_logprobs_sent = false;

  bool running = false;
  bool finished = false;
  // Seconds on the steady clock.
  double arrival_time = 0, first_scheduled_time = -1, first_token_time = -1, last_token_time = -1;

  int32_t generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len; }
  int32_t remaining() const { return static_cast<int32_t>(tokens.size()) - num_computed; }
  // Prompt logprobs ask for every position's logits: such a sequence skips the prefix cache
  // until they are sent.
  bool wants_prompt_logits() const { return request.prompt_logprobs && !prompt_logprobs_sent; }
  // Still computing its prompt (the first time, or again after a preemption).
  bool prefilling() const { return num_computed < prompt_len; }

  // What the sampler changes in this sequence's next row (token_mask must already be sized
  // when a constraint is set; it may be filled later, before sampling).
  LogitAdjust NextLogitAdjust() const {
    LogitAdjust a;
    a.bias = request.logit_bias;
    if (generated() < request.stopping.min_new_tokens) a.banned = min_tokens_ban;
    if (request.constraint != nullptr) a.allowed = token_mask;
    return a;
  }

  // Chained hash of full block `index` (0-based); tokens of that block must exist.
  uint64_t BlockHash(int32_t index, int32_t block_size) {
    while (static_cast<int32_t>(block_hashes.size()) <= index) {
      const size_t b = block_hashes.size();
      const uint64_t parent = b == 0 ? hash_root : block_hashes.back();
      block_hashes.push_back(common::ChainBlockHash(
          parent, std::span<const int32_t>(tokens).subspan(b * block_size, block_size)));
    }
    return block_hashes[index];
  }
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_SEQUENCE_H_
