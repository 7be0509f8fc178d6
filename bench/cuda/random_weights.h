// Random Phi weights generated on the device, for benchmarks and the GPU / emulator tests: no
// checkpoint file needed. Not part of the CUDA backend (it loads real weights through
// CudaModelRunner).
#ifndef PHI_BENCH_CUDA_RANDOM_WEIGHTS_H_
#define PHI_BENCH_CUDA_RANDOM_WEIGHTS_H_

#include <cstdint>

#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace phi::bench {

// Uniform(-scale, scale) BF16 weights (fill_random_forward, one seed per tensor from `seed`);
// layer norms get weight 1 and bias ~0 so activations stay in range. Synchronizes the
// model's stream.
worker::cuda::CudaStatus FillRandomWeights(worker::cuda::PhiCudaModel& m, uint64_t seed,
                                           float scale);

}  // namespace phi::bench

#endif  // PHI_BENCH_CUDA_RANDOM_WEIGHTS_H_
