// Deterministic pseudo-random device buffers for benchmarks and the model tests' random
// weights (random_weights.h): no file needed. Not part of the CUDA backend.
#ifndef PHI_BENCH_CUDA_FILL_RANDOM_H_
#define PHI_BENCH_CUDA_FILL_RANDOM_H_

#include <cstdint>

#include "services/worker/backends/cuda/kernels.h"

namespace phi::bench {

// Fills `n` values with uniform(-scale, scale) drawn from (seed, index) alone, so the same
// seed gives the same buffer on any GPU and on the emulator.
worker::cuda::CudaStatus fill_random_forward(worker::cuda::bf16* out, int64_t n, uint64_t seed,
                                             float scale, cudaStream_t stream);
worker::cuda::CudaStatus fill_random_forward(float* out, int64_t n, uint64_t seed, float scale,
                                             cudaStream_t stream);

}  // namespace phi::bench

#endif  // PHI_BENCH_CUDA_FILL_RANDOM_H_
