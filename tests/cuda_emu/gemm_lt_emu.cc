// GemmLt for the emulated build: the same contract as gemm_lt.cc (D = A W^T + bias + beta D,
// F32 accumulation, one rounding to D's type) with a host loop in place of cuBLASLt, in stream
// order so that it is captured into graphs like the real GEMMs. Shapes with M <= small_m_max
// take gemv_forward, the emulated kernel, as on the GPU.
#include <cuda_bf16.h>

#include <cstdint>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/gemm_lt.h"
#include "tests/cuda_emu/cuda_emu.h"

namespace phi::worker::cuda {

struct GemmLt::Plan {};

CudaStatus GemmLt::Create(size_t workspace_bytes, std::unique_ptr<GemmLt>* out) {
  std::unique_ptr<GemmLt> g(new GemmLt());
  g->workspace_bytes_ = workspace_bytes;
  *out = std::move(g);
  return {};
}

GemmLt::~GemmLt() = default;

CudaStatus GemmLt::Matmul(const bf16* a, const bf16* w, const void* bias, void* d, bool d_f32,
                          float beta, int m, int n, int k, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(m >= 0 && n > 0 && k > 0, "GemmLt::Matmul: m >= 0, n > 0, k > 0");
  if (m == 0) return {};
  if (TakesGemv(a, w, m, k)) return gemv_forward(a, w, bias, d, d_f32, beta, m, n, k, stream);
  const cudaError_t e = cuda_emu::Enqueue(stream, [=] {
    std::vector<float> ar(k), wc(k);
    for (int r = 0; r < m; ++r) {
      for (int i = 0; i < k; ++i) ar[i] = __bfloat162float(a[static_cast<int64_t>(r) * k + i]);
      for (int c = 0; c < n; ++c) {
        for (int i = 0; i < k; ++i) wc[i] = __bfloat162float(w[static_cast<int64_t>(c) * k + i]);
        // Eight partial sums (the order is cuBLASLt's business too): lets the loop vectorise.
        float part[8] = {};
        int i = 0;
        for (; i + 8 <= k; i += 8) {
          for (int j = 0; j < 8; ++j) part[j] += ar[i + j] * wc[i + j];
        }
        float acc = 0.0f;
        for (; i < k; ++i) acc += ar[i] * wc[i];
        for (float p : part) acc += p;
        const int64_t o = static_cast<int64_t>(r) * n + c;
        if (d_f32) {
          float* df = static_cast<float*>(d);
          if (bias) acc += static_cast<const float*>(bias)[c];
          if (beta != 0.0f) acc += beta * df[o];
          df[o] = acc;
        } else {
          bf16* db = static_cast<bf16*>(d);
          if (bias) acc += __bfloat162float(static_cast<const bf16*>(bias)[c]);
          if (beta != 0.0f) acc += beta * __bfloat162float(db[o]);
          db[o] = __float2bfloat16(acc);
        }
      }
    }
  });
  PHI_CUDA_CHECK(e);
  return {};
}

}  // namespace phi::worker::cuda
