// Requests with every sampling mode run through the real Engine over a group's LeaderRunner:
// greedy with logprobs, temperature with top-k / top-p / min-p and a seed, a repetition
// penalty (whole rows), prompt logprobs (whole rows), min-p alone. Rank 0 writes what a
// client sees so that groups of N ranks can be compared with one rank:
//   <out>.etokens   per request: the tokens, the logprob top ids (exact comparison)
//   <out>.elogprobs every logprob (sampled and top), float32 (1e-5 comparison)
// then runs one top_k = 40 request alone and prints
//   "CANDIDATE_GATHER <bytes> <candidate rows> <full rows> <fallback rows>"
// for it (the runner's logits all-gathers; zeros without a group), then the same request
// with a logit_bias and prints "ADJUSTED_GATHER <candidate rows> <full rows>" (rows a
// request adjusts, by logit_bias, min_new_tokens or a constraint, must come back whole).
#ifndef PHI_TESTS_INTEGRATION_PARALLEL_ENGINE_SAMPLING_SCENARIO_H_
#define PHI_TESTS_INTEGRATION_PARALLEL_ENGINE_SAMPLING_SCENARIO_H_

#include <functional>
#include <string>

#include "services/worker/engine/model_runner.h"
#include "services/worker/parallel/vocab_gather.h"

namespace phi::worker::parallel::testing {

// `stats` reads the shard runner's running gather totals. Returns 0, or 1 after printing why.
int RunEngineSamplingScenario(worker::ModelRunner& runner, const std::function<VocabGatherStats()>& stats,
                              const std::string& out_prefix);

}  // namespace phi::worker::parallel::testing

#endif  // PHI_TESTS_INTEGRATION_PARALLEL_ENGINE_SAMPLING_SCENARIO_H_
