// Helpers for the PhiCudaModel tests: random weights (bench/cuda/random_weights.h) and the
// greedy token of a sequence's last logits row, read back as the runner's whole-row path does.
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_MODEL_TEST_UTIL_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_MODEL_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "bench/cuda/random_weights.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace phi::worker::cuda::testing {

using ::phi::bench::FillRandomWeights;

// Argmax (lowest id on ties) of sequence i's last logits row after Forward; -1 when the row
// cannot be read.
inline int32_t GreedyToken(const PhiCudaModel& m, const PhiStepOutput& o, int i) {
  std::vector<float> row(m.config().vocab_size);
  if (!m.CopyLogits(o.first_row[i] + o.num_rows[i] - 1, 1, row.data()).ok()) return -1;
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

}  // namespace phi::worker::cuda::testing

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_MODEL_TEST_UTIL_H_
