// Fixtures of the candidate-path tests (sampler_candidates_test, the CUDA top-candidates
// tests): seeded logits rows with and without ties, and the sampling option sets
// CandidatesNeeded lets travel as candidates (greedy, top-k with top-p / min-p, min-p alone).
#ifndef PHI_TESTS_UNIT_WORKER_ENGINE_SAMPLER_CANDIDATE_CASES_H_
#define PHI_TESTS_UNIT_WORKER_ENGINE_SAMPLER_CANDIDATE_CASES_H_

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "services/worker/engine/sampler.h"

namespace phi::worker::candidate_cases {

inline std::vector<float> RandomRow(int n, uint64_t seed, bool ties) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> l(n);
  // Ties: values on a coarse grid, so that many ids share the top and the cut values.
  for (auto& v : l) v = ties ? std::round(d(rng) * 2.0f) / 2.0f : d(rng);
  return l;
}

struct Case {
  SamplingOptions options;
  bool logprobs = false;
  int32_t top_n = 0;
};

inline std::vector<Case> Cases(uint64_t seed) {
  std::vector<Case> cases;
  Case greedy;
  cases.push_back(greedy);
  greedy.logprobs = true;
  greedy.top_n = 5;
  cases.push_back(greedy);
  for (int32_t k : {1, 2, 5, 40, 63}) {
    Case c;
    c.options.temperature = k == 5 ? 1.3f : 0.7f;
    c.options.top_k = k;
    c.options.seed = seed;
    cases.push_back(c);
    Case p = c;
    p.options.top_p = 0.9f;
    cases.push_back(p);
    Case m = c;
    m.options.min_p = 0.05f;
    m.logprobs = true;
    m.top_n = 3;
    cases.push_back(m);
    Case all = p;
    all.options.min_p = 0.1f;
    all.logprobs = true;
    all.top_n = 20;
    cases.push_back(all);
  }
  Case min_p_only;
  min_p_only.options.temperature = 0.5f;
  min_p_only.options.min_p = 0.2f;
  min_p_only.options.seed = seed;
  cases.push_back(min_p_only);
  return cases;
}

}  // namespace phi::worker::candidate_cases

#endif  // PHI_TESTS_UNIT_WORKER_ENGINE_SAMPLER_CANDIDATE_CASES_H_
