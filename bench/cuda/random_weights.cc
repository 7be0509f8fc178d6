#include "bench/cuda/random_weights.h"

#include <cuda_runtime.h>

#include <vector>

#include "bench/cuda/fill_random.h"

namespace phi::bench {

using worker::cuda::bf16;
using worker::cuda::CudaStatus;

CudaStatus FillRandomWeights(worker::cuda::PhiCudaModel& m, uint64_t seed, float scale) {
  const worker::cuda::PhiCudaConfig& c = m.config();
  const worker::cuda::PhiCudaWeights& w = m.weights();
  const cudaStream_t stream = m.stream();
  const int64_t h = c.hidden_size;
  uint64_t s = seed;
  PHI_CUDA_RETURN_IF_ERROR(
      fill_random_forward(w.embed, static_cast<int64_t>(c.local_vocab()) * h, ++s, scale, stream));
  std::vector<bf16> ones(h, __float2bfloat16(1.0f));
  for (const worker::cuda::PhiCudaLayer& l : w.layers) {
    PHI_CUDA_CHECK(cudaMemcpyAsync(l.ln_w, ones.data(), 2 * h, cudaMemcpyHostToDevice, stream));
    PHI_CUDA_RETURN_IF_ERROR(fill_random_forward(l.ln_b, h, ++s, scale, stream));
    PHI_CUDA_RETURN_IF_ERROR(
        fill_random_forward(l.w1, static_cast<int64_t>(c.w1_rows()) * h, ++s, scale, stream));
    PHI_CUDA_RETURN_IF_ERROR(fill_random_forward(l.b1, c.w1_rows(), ++s, scale, stream));
    PHI_CUDA_RETURN_IF_ERROR(fill_random_forward(l.w2, h * c.w2_cols(), ++s, scale, stream));
    PHI_CUDA_RETURN_IF_ERROR(fill_random_forward(l.b2, h, ++s, scale, stream));
  }
  PHI_CUDA_CHECK(
      cudaMemcpyAsync(w.final_ln_w, ones.data(), 2 * h, cudaMemcpyHostToDevice, stream));
  PHI_CUDA_RETURN_IF_ERROR(fill_random_forward(w.final_ln_b, h, ++s, scale, stream));
  PHI_CUDA_RETURN_IF_ERROR(fill_random_forward(
      w.lm_w, static_cast<int64_t>(c.local_vocab()) * h, ++s, scale, stream));
  PHI_CUDA_RETURN_IF_ERROR(fill_random_forward(w.lm_b, c.local_vocab(), ++s, scale, stream));
  PHI_CUDA_CHECK(cudaStreamSynchronize(stream));
  return {};
}

}  // namespace phi::bench
