// Assembling a step's logits from a vocabulary-split lm_head: each rank holds the columns
// [id0, id0 + width) of every row. Rows the sampler needs whole (prompt logprobs, penalties,
// pure temperature) are all-gathered whole; a row whose SequenceStep asks for
// num_candidates = C travels as each rank's top C (value, id) pairs of its slice and the
// slice's log-sum-exp: 16 + 8 C bytes per rank instead of 4 x width. One all-gather per step
// carries both. Every rank merges the same gathered bytes and checks with the sequence's
// sampling options whether the candidates hold every id the sampler could keep; the rare rows
// where they do not (ties at the cut) are gathered whole in a second all-gather, which every
// rank agrees to make because it saw the same data. Backends call it after their lm_head.
#ifndef PHI_SERVICES_WORKER_PARALLEL_VOCAB_GATHER_H_
#define PHI_SERVICES_WORKER_PARALLEL_VOCAB_GATHER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel {

// Running totals, for tests and benchmarks.
struct VocabGatherStats {
  uint64_t bytes_gathered = 0;  // all-gather output bytes on this rank (all ranks' shares)
  uint64_t gathers = 0;         // all-gather calls
  uint64_t full_rows = 0;       // rows gathered whole (including fallbacks)
  uint64_t candidate_rows = 0;  // rows returned as candidates
  uint64_t fallback_rows = 0;   // candidate rows the candidates did not cover, gathered whole
};

// `local` holds this rank's slice of every row in `out`'s current layout (out->first_row and
// out->num_rows already set for `batch`, one row per sequence or tokens.size() with
// all_logits), row r at local[r * width]. Fills out->data (full rows of `vocab_size`),
// out->candidates, and rewrites first_row / num_rows for the sequences returned as
// candidates. `vocab_limit`: ids at or past it are not rows of the model (the model's
// vocab_size; the tokenizer's size limits nothing, engine/sampler.h).
absl::Status GatherVocabSplitLogits(Communicator& comm, const worker::StepBatch& batch, const float* local,
                                    int32_t id0, int32_t width, int32_t vocab_size, int32_t vocab_limit,
                                    worker::StepLogits* out, VocabGatherStats* stats);

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_VOCAB_GATHER_H_
