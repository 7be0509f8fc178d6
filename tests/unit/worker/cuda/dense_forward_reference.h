// A dense CPU forward of one prompt through a PhiCudaModel's own weights (read back from the
// device), from the kernels' twins, rounding to BF16 wherever the GPU stores BF16; with an
// adapter, its deltas scaling * B (A x) in double next to each adapted linear layer, where
// the model adds them (q/k/v/fc1 into the W1 output before rotary and gelu, dense/fc2 into
// the residual with the W2 product). The reference of the model tests.
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_DENSE_FORWARD_REFERENCE_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_DENSE_FORWARD_REFERENCE_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/cuda/kernels_cpu.h"

namespace phi::worker::cuda::testing {

inline std::vector<float> Download(const bf16* p, size_t n) {
  std::vector<bf16> v(n);
  cudaMemcpy(v.data(), p, n * 2, cudaMemcpyDeviceToHost);
  return ToF32(v);
}
inline std::vector<float> Download(const float* p, size_t n) {
  std::vector<float> v(n);
  cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost);
  return v;
}

inline std::vector<float> RoundBf16(std::vector<float> v) {
  for (float& x : v) x = bf16_round_cpu(x);
  return v;
}

// y[t, 0:out] += scaling * B (A x[t, 0:in]) for n rows, in double (w.rank 0: nothing).
inline void AddLoraDelta(const PhiCudaLoraWeights& w, const float* x, int x_stride, int in,
                         float* y, int y_stride, int out, int n) {
  for (int t = 0; t < n; ++t) {
    std::vector<double> u(w.rank, 0.0);
    for (int j = 0; j < w.rank; ++j) {
      for (int k = 0; k < in; ++k) u[j] += static_cast<double>(x[t * x_stride + k]) * w.a[j * in + k];
    }
    for (int o = 0; o < out; ++o) {
      double d = 0.0;
      for (int j = 0; j < w.rank; ++j) d += u[j] * w.b[o * w.rank + j];
      y[t * y_stride + o] = static_cast<float>(y[t * y_stride + o] + w.scaling * d);
    }
  }
}

// Logits of every position of `tokens` (one prompt from position 0).
inline std::vector<float> DenseCpuForward(const PhiCudaModel& m, const std::vector<int32_t>& tokens,
                                          const PhiCudaAdapter* adapter = nullptr) {
  const PhiCudaConfig& c = m.config();
  const PhiCudaWeights& w = m.weights();
  const int n = static_cast<int>(tokens.size()), h = c.hidden_size;
  const int ha = c.num_heads * c.head_dim, inter = c.intermediate_size;
  std::vector<float> x(static_cast<size_t>(n) * h);
  embedding_forward_cpu(tokens.data(), Download(w.embed, static_cast<size_t>(c.vocab_size) * h).data(),
                        x.data(), n, c.vocab_size, h);
  // One block holds the whole prompt, identity block table.
  const int bs = n;
  std::vector<float> kc(static_cast<size_t>(c.num_heads) * bs * 64), vc(kc.size());
  std::vector<int32_t> pos(n), slots(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::iota(slots.begin(), slots.end(), 0);
  const int32_t table[] = {0}, q_off[] = {0}, st[] = {0}, nn[] = {n};
  for (int li = 0; li < c.num_layers; ++li) {
    const PhiCudaLayer& l = w.layers[li];
    std::vector<float> hn(x.size()), f(static_cast<size_t>(n) * c.w1_rows()),
        mid(static_cast<size_t>(n) * c.w2_cols());
    layernorm_forward_cpu(x.data(), nullptr, Download(l.ln_w, h).data(), Download(l.ln_b, h).data(),
                          hn.data(), n, h, c.layer_norm_eps);
    hn = RoundBf16(hn);
    gemm_bias_cpu(hn.data(), Download(l.w1, static_cast<size_t>(c.w1_rows()) * h).data(),
                  Download(l.b1, c.w1_rows()).data(), f.data(), 0.0f, n, c.w1_rows(), h);
    f = RoundBf16(f);
    if (adapter != nullptr) {
      const auto& a = adapter->layers[li];
      const int w1 = c.w1_rows();
      AddLoraDelta(a[0], hn.data(), h, h, f.data(), w1, ha, n);
      AddLoraDelta(a[1], hn.data(), h, h, f.data() + ha, w1, ha, n);
      AddLoraDelta(a[2], hn.data(), h, h, f.data() + 2 * ha, w1, ha, n);
      AddLoraDelta(a[4], hn.data(), h, h, f.data() + 3 * ha, w1, inter, n);
      f = RoundBf16(f);
    }
    rotary_kv_forward_cpu(f.data(), c.w1_rows(), pos.data(), slots.data(), kc.data(), vc.data(), n,
                          c.num_heads, 64, c.rotary_dim, bs, c.rope_theta);
    f = RoundBf16(f);
    kc = RoundBf16(kc);
    attention_prefill_cpu(f.data(), c.w1_rows(), kc.data(), vc.data(), table, 1, q_off, st, nn,
                          mid.data(), c.w2_cols(), 1, c.num_heads, 64, bs, 0.125f);
    gelu_forward_cpu(f.data() + c.qkv_width(), c.w1_rows(), mid.data() + ha, c.w2_cols(), n, inter);
    mid = RoundBf16(mid);
    gemm_bias_cpu(mid.data(), Download(l.w2, static_cast<size_t>(h) * c.w2_cols()).data(),
                  Download(l.b2, h).data(), x.data(), 1.0f, n, h, c.w2_cols());
    if (adapter != nullptr) {
      AddLoraDelta(adapter->layers[li][3], mid.data(), c.w2_cols(), ha, x.data(), h, h, n);
      AddLoraDelta(adapter->layers[li][5], mid.data() + ha, c.w2_cols(), inter, x.data(), h, h, n);
    }
  }
  std::vector<float> hf(x.size()), logits(static_cast<size_t>(n) * c.vocab_size);
  layernorm_forward_cpu(x.data(), nullptr, Download(w.final_ln_w, h).data(),
                        Download(w.final_ln_b, h).data(), hf.data(), n, h, c.layer_norm_eps);
  hf = RoundBf16(hf);
  gemm_bias_cpu(hf.data(), Download(w.lm_w, static_cast<size_t>(c.vocab_size) * h).data(),
                Download(w.lm_b, c.vocab_size).data(), logits.data(), 0.0f, n, c.vocab_size, h);
  return logits;
}

}  // namespace phi::worker::cuda::testing

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_DENSE_FORWARD_REFERENCE_H_
