// Portable kernels for CPUs without AVX-512 (and a second implementation the AVX-512
// kernels are tested against). Same contract, same K blocking; plain multiply-add.
#include <cstring>

#include "services/worker/backends/cpu/matmul_kernels.h"

namespace phi::cpu::kernels {
namespace {

inline float Bf16(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <bool kBf16>
void Run(const MatMulArgs& a) {
  float w_line[kPanel];
  for (int64_t kb = 0; kb < a.k; kb += kKBlock) {
    const int64_t ke = kb + kKBlock < a.k ? kb + kKBlock : a.k;
    for (int64_t p = a.p0; p < a.p1; ++p) {
      const int64_t cols = a.n - p * kPanel < kPanel ? a.n - p * kPanel : kPanel;
      for (int64_t m = 0; m < a.m; ++m) {
        const float* x = a.x + m * a.ldx;
        float acc[kPanel] = {};
        for (int64_t k = kb; k < ke; ++k) {
          const int64_t line = (p * a.k + k) * kPanel;
          for (int j = 0; j < kPanel; ++j) {
            w_line[j] = kBf16 ? Bf16(static_cast<const uint16_t*>(a.w)[line + Bf16LaneOf(j)])
                              : static_cast<const float*>(a.w)[line + j];
          }
          for (int j = 0; j < kPanel; ++j) acc[j] += x[k] * w_line[j];
        }
        float* y = a.y + m * a.ldy + p * kPanel;
        for (int64_t j = 0; j < cols; ++j) {
          float r = acc[j];
          if (kb == 0) {
            if (a.bias != nullptr) r = r + a.bias[p * kPanel + j];
            if (a.accumulate) r = y[j] + r;
          } else {
            r = y[j] + r;
          }
          y[j] = r;
        }
      }
    }
  }
}

}  // namespace

void pack_bands(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t b0, int64_t b1, float* x_bands) {
  for (int64_t b = b0; b < b1; ++b) {
    float* dst = x_bands + b * kBandRows * k;
    // Rows past m in the last band stay unset: a tile reads only the band's valid rows.
    for (int64_t i = 0; i < kBandRows && b * kBandRows + i < m; ++i) {
      const float* src = x + (b * kBandRows + i) * ldx;
      for (int64_t c = 0; c < k; ++c) dst[c * kBandRows + i] = src[c];
    }
  }
}

void matmul_bf16_portable(const MatMulArgs& a) { Run<true>(a); }
void matmul_f32_portable(const MatMulArgs& a) { Run<false>(a); }

}  // namespace phi::cpu::kernels
