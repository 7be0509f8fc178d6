// Helpers for the PhiCudaModel tests: random weights (bench/cuda/random_weights.h), the tiny
// model's shape and the greedy token of a sequence's last logits row, read back as the runner's whole-row path does.
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_MODEL_TEST_UTIL_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_MODEL_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "bench/cuda/random_weights.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace phi::worker::cuda::testing {

using ::phi::bench::FillRandomWeights;

// The tiny Phi of the model tests: vocabulary 300, hidden 128 (2 heads of 64), MLP 256, 2
// layers.
inline PhiCudaConfig TinyPhiCudaConfig(int max_positions) {
  PhiCudaConfig c;
  c.vocab_size = 300;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_layers = 2;
  c.num_heads = 2;
  c.head_dim = 64;
  c.rotary_dim = 32;
  c.max_positions = max_positions;
  return c;
}

// Argmax (lowest id on ties) of sequence i's last logits row after Forward; -1 when the row
// cannot be read.
inline int32_t GreedyToken(const PhiCudaModel& m, const PhiStepOutput& o, int i) {
  std::vector<float> row(m.config().vocab_size);
  if (!m.CopyLogits(o.first_row[i] + o.num_rows[i] - 1, 1, row.data()).ok()) return -1;
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

}  // namespace phi::worker::cuda::testing

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_MODEL_TEST_UTIL_H_
