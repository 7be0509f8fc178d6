// The fixed schedule of engine-like steps that the group tests run on rank 0: chunked
// prefill, decodes, a sequence that joins late, one that leaves and whose KV blocks are
// reused, a step with logits for every prompt token, and an idle pause (heartbeats).
// Greedy tokens come from the logits, so any divergence compounds into different tokens.
#ifndef PHI_TESTS_UNIT_WORKER_PARALLEL_SCENARIO_H_
#define PHI_TESTS_UNIT_WORKER_PARALLEL_SCENARIO_H_

#include <string>

#include "services/worker/engine/model_runner.h"

namespace phi::worker::parallel::testing {

// KV cache the scenario needs: block size 4, 40 blocks (AllocateKvCache it first).
inline constexpr int32_t kScenarioBlockSize = 4;
inline constexpr int32_t kScenarioBlocks = 40;
inline constexpr int kScenarioSteps = 12;

// Writes every logits row (float32) to `<out_prefix>.logits` and the greedy tokens to
// `<out_prefix>.tokens`. Token ids stay below 96 (the smallest test vocabulary).
// Returns 0, or 1 after printing the failed step to stderr.
int RunScenario(worker::ModelRunner& runner, const std::string& out_prefix);

}  // namespace phi::worker::parallel::testing

#endif  // PHI_TESTS_UNIT_WORKER_PARALLEL_SCENARIO_H_
