// Portable kernels for CPUs without AVX-512 BF16 (and the reference the AVX-512 kernels
// are tested against). Same contract and the same BF16 rounding of activations.
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

inline void Store(const MatMulArgs& a, int64_t m, int64_t n, float s) {
  if (a.bias != nullptr) s += a.bias[n];
  float* y = a.y + m * a.ldy + n;
  *y = a.accumulate ? *y + s : s;
}

}  // namespace

void matmul_bf16_portable(const MatMulArgs& a) {
  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  const uint16_t* w = static_cast<const uint16_t*>(a.w);
  for (int64_t n = a.n0; n < a.n1; ++n) {
    const uint16_t* wr = w + n * a.ldw;
    for (int64_t m = 0; m < a.m; ++m) {
      const uint16_t* xr = x + m * a.ldx;
      float acc[16] = {};
      for (int64_t k = 0; k < a.ldw; k += 16) {
        for (int l = 0; l < 16; ++l) acc[l] += Bf16(xr[k + l]) * Bf16(wr[k + l]);
      }
      float s = 0;
      for (float v : acc) s += v;
      Store(a, m, n, s);
    }
  }
}

void matmul_f32_portable(const MatMulArgs& a) {
  const float* x = static_cast<const float*>(a.x);
  const float* w = static_cast<const float*>(a.w);
  for (int64_t n = a.n0; n < a.n1; ++n) {
    const float* wr = w + n * a.ldw;
    for (int64_t m = 0; m < a.m; ++m) {
      const float* xr = x + m * a.ldx;
      float acc[16] = {};
      for (int64_t k = 0; k < a.ldw; k += 16) {
        for (int l = 0; l < 16; ++l) acc[l] += xr[k + l] * wr[k + l];
      }
      float s = 0;
      for (float v : acc) s += v;
      Store(a, m, n, s);
    }
  }
}

}  // namespace phi::cpu::kernels
