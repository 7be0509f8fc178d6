// The decode GEMV's entry points (kernels.h): decode_gemv_forward checks its arguments and runs the
// one-token kernel (gemv_decode.cu) or the tensor-core kernel for 2..8 tokens (gemv_mma.cu);
// gemv_forward is its kPlain form for GemmLt's small-M GEMMs.
#include <algorithm>

#include "services/worker/backends/cuda/activations.cuh"
#include "services/worker/backends/cuda/device_limits.h"
#include "services/worker/backends/cuda/gemv_launch.h"
#include "services/worker/backends/cuda/kernels.h"

namespace phi::worker::cuda {

bool decode_gemv_layernorm_fits(int k) { return layernorm_reg_vpt(k) > 0 && k <= kDecodeGemvMaxK; }

bool decode_gemv_fits(int m, int k) {
  if (m < 1 || m > kGemvMaxM || k <= 0 || k % 8 != 0) return false;
  if (m == 1) return k <= kDecodeGemvMaxK;
  return decode_gemv_tiles_shared_bytes(m, k) <= max_dynamic_shared_per_block();
}

int decode_gemv_default_split(int m, int n, int k) {
  return m <= 1 ? decode_gemv_rows_default_split(n, k) : decode_gemv_tiles_default_split(n, k);
}

int64_t gemv_persistent_grid(const void* kernel, int threads, size_t shared_bytes,
                             int blocks_per_sm, int groups, int max_held) {
  const int resident = resident_blocks_per_sm(kernel, threads, shared_bytes);
  const int per_sm = blocks_per_sm > 0 && (resident == 0 || blocks_per_sm < resident)
                         ? blocks_per_sm
                         : (resident > 0 ? resident : 1);
  const int sms = current_sm_count();
  const int64_t cap = static_cast<int64_t>(per_sm) * (sms > 0 ? sms : 1);
  const int64_t rounds = (groups + cap - 1) / cap;
  int64_t grid = (groups + rounds - 1) / rounds;
  if (max_held > 0) grid = std::max<int64_t>(grid, (groups + max_held - 1) / max_held);
  return grid;
}

CudaStatus decode_gemv_forward(const DecodeGemvArgs& g, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(g.m >= 1 && g.m <= kGemvMaxM,
                   "decode_gemv_forward: m must be in [1, " + std::to_string(kGemvMaxM) + "], got " +
                       std::to_string(g.m));
  PHI_CUDA_REQUIRE(g.n > 0 && g.k > 0 && g.k % 8 == 0,
                   "decode_gemv_forward: n > 0 and k a positive multiple of 8, got n=" +
                       std::to_string(g.n) + " k=" + std::to_string(g.k));
  PHI_CUDA_REQUIRE(decode_gemv_fits(g.m, g.k),
                   "decode_gemv_forward: " + std::to_string(g.m) + " rows of k=" + std::to_string(g.k) +
                       " do not fit in shared memory (m = 1: k <= " +
                       std::to_string(kDecodeGemvMaxK) + "; m >= 2: " +
                       std::to_string(decode_gemv_tiles_shared_bytes(g.m, g.k)) + " bytes of " +
                       std::to_string(max_dynamic_shared_per_block()) + ")");
  PHI_CUDA_REQUIRE(g.w != nullptr && g.d != nullptr &&
                       reinterpret_cast<uintptr_t>(g.w) % 16 == 0,
                   "decode_gemv_forward: w (16-byte aligned) and d are required");
  PHI_CUDA_REQUIRE(g.split == 0 || g.split == 1 || g.split == 2 || g.split == 4 || g.split == 8,
                   "decode_gemv_forward: split must be 0 (default), 1, 2, 4 or 8, got " +
                       std::to_string(g.split));
  PHI_CUDA_REQUIRE(g.blocks_per_sm >= 0, "decode_gemv_forward: blocks_per_sm must be >= 0");
  PHI_CUDA_REQUIRE(g.first_col >= 0 && g.first_col <= g.k && g.first_col % 8 == 0 &&
                       (g.prologue != GemvPrologue::kGeluConcat || g.first_col == g.a_cols),
                   "decode_gemv_forward: first_col must be a multiple of 8 in [0, k] (a_cols with "
                   "kGeluConcat), got " + std::to_string(g.first_col));
  switch (g.prologue) {
    case GemvPrologue::kPlain:
      PHI_CUDA_REQUIRE(g.a != nullptr && reinterpret_cast<uintptr_t>(g.a) % 16 == 0,
                       "decode_gemv_forward: kPlain needs a 16-byte aligned a");
      break;
    case GemvPrologue::kLayerNorm:
      PHI_CUDA_REQUIRE(decode_gemv_layernorm_fits(g.k),
                       "decode_gemv_forward: kLayerNorm needs k a multiple of 4 up to 8192, got " +
                           std::to_string(g.k));
      PHI_CUDA_REQUIRE(g.x != nullptr && g.gamma != nullptr && g.beta_ln != nullptr &&
                           ((reinterpret_cast<uintptr_t>(g.x) |
                             reinterpret_cast<uintptr_t>(g.gamma) |
                             reinterpret_cast<uintptr_t>(g.beta_ln)) %
                            16) == 0,
                       "decode_gemv_forward: kLayerNorm needs 16-byte aligned x, gamma and beta_ln");
      break;
    case GemvPrologue::kGeluConcat:
      PHI_CUDA_REQUIRE(g.a_cols >= 0 && g.a_cols % 8 == 0 && g.f_cols >= 0 &&
                           g.a_cols + g.f_cols <= g.k &&
                           (g.a_cols == 0 || (g.a != nullptr &&
                                              reinterpret_cast<uintptr_t>(g.a) % 16 == 0)) &&
                           (g.f_cols == 0 || g.f != nullptr) &&
                           (g.f_stride == 0 || g.f_stride >= g.f_cols),
                       "decode_gemv_forward: kGeluConcat needs a_cols a multiple of 8, a_cols + "
                       "f_cols <= k and f_stride 0 or >= f_cols, got " +
                           std::to_string(g.a_cols) + " + " + std::to_string(g.f_cols) +
                           " of " + std::to_string(g.k) + ", f_stride " +
                           std::to_string(g.f_stride));
      break;
  }
  return g.m == 1 ? launch_decode_gemv_rows(g, stream) : launch_decode_gemv_tiles(g, stream);
}

CudaStatus gemv_forward(const bf16* a, const bf16* w, const void* bias, void* d, bool d_f32,
                        float beta, int m, int n, int k, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(m >= 0 && m <= kGemvMaxM, "gemv_forward: m must be in [0, " +
                                                 std::to_string(kGemvMaxM) + "], got " +
                                                 std::to_string(m));
  if (m == 0) return {};
  DecodeGemvArgs g;
  g.m = m;
  g.a = a;
  g.w = w;
  g.bias = bias;
  g.d = d;
  g.d_f32 = d_f32;
  g.beta = beta;
  g.n = n;
  g.k = k;
  return decode_gemv_forward(g, stream);
}

}  // namespace phi::worker::cuda
