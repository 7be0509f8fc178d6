// Shared by the CUDA runner's candidate tests: the model folder, random prompts, and a batch
// whose sampled sequences ask for candidates the way the engine does (CandidatesNeeded).
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_CANDIDATE_BATCH_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_CANDIDATE_BATCH_H_

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "services/worker/engine/model_runner.h"
#include "services/worker/engine/sampler.h"

namespace phi::worker::cuda::candidate_test {

inline constexpr int32_t kEngineMaxCandidates = 64;  // engine.cc kMaxSampleCandidates

// The tiny random checkpoint (PHI_TEST_MODEL_DIR); empty when not set.
inline std::string ModelDir() {
  const char* d = std::getenv("PHI_TEST_MODEL_DIR");
  return d ? d : "";
}

inline std::vector<int32_t> Prompt(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

struct Seq {
  std::vector<int32_t> tokens, blocks;
  SamplingOptions sampling;
  bool logprobs = false;
  int32_t top_n = 0;
  bool all_logits = false;
};

// Sequences from position 0; with `candidates`, each sampled one asks for as many candidates
// as the engine would.
inline StepBatch Batch(const std::vector<Seq>& seqs, int32_t vocab_limit, bool candidates) {
  StepBatch b;
  for (size_t i = 0; i < seqs.size(); ++i) {
    SequenceStep s{.seq_id = i + 1, .tokens = seqs[i].tokens, .start_pos = 0, .block_table = seqs[i].blocks,
                   .all_logits = seqs[i].all_logits};
    if (candidates && !s.all_logits) {
      s.num_candidates = CandidatesNeeded(seqs[i].sampling, vocab_limit, seqs[i].logprobs, seqs[i].top_n,
                                          kEngineMaxCandidates);
      s.sampling = seqs[i].sampling;
      s.logprobs = seqs[i].logprobs;
    }
    b.seqs.push_back(s);
  }
  return b;
}

}  // namespace phi::worker::cuda::candidate_test

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_CANDIDATE_BATCH_H_
