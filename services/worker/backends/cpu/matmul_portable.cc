// Portable kernels: the reference the SIMD kernels are tested against, and the path of
// CPUs without AVX2. Same contract and K blocking; products and sums rounded separately
// (this file is built with -ffp-contract=off). Written for the compiler's vectorizer:
// a weight line is widened in its stored order into 32 floats and multiplied into 32
// accumulators per row, fixed-length loops over contiguous arrays, and four rows share
// each widened line; lanes are mapped back to columns only when a block's sums are folded.
#include <cstring>

#include "services/worker/backends/cpu/matmul_kernels.h"

namespace phi::worker::cpu::kernels {
namespace {

enum class Format { kF32, kBF16, kInt8 };

constexpr int kRows = 4;  // rows sharing one widened weight line

template <Format F>
inline void WidenLine(const MatMulArgs& a, int64_t p, int64_t k, float* w) {
  const int64_t line = (p * a.k + k) * kPanel;
  if constexpr (F == Format::kBF16) {
    const uint16_t* src = static_cast<const uint16_t*>(a.w) + line;
    uint32_t bits[kPanel];
    for (int l = 0; l < kPanel; ++l) bits[l] = static_cast<uint32_t>(src[l]) << 16;
    std::memcpy(w, bits, sizeof(bits));
  } else if constexpr (F == Format::kInt8) {
    const int8_t* src = static_cast<const int8_t*>(a.w) + line;
    for (int l = 0; l < kPanel; ++l) w[l] = static_cast<float>(src[l]);
  } else {
    std::memcpy(w, static_cast<const float*>(a.w) + line, kPanel * sizeof(float));
  }
}

template <Format F>
constexpr int LaneOf(int j) {
  return F == Format::kBF16 ? Bf16LaneOf(j) : j;
}

template <Format F, int R>
void Rows(const MatMulArgs& a, int64_t m0, int64_t p, int64_t kb, int64_t ke) {
  alignas(64) float acc[R][kPanel] = {};
  alignas(64) float w[kPanel];
  for (int64_t k = kb; k < ke; ++k) {
    WidenLine<F>(a, p, k, w);
    for (int r = 0; r < R; ++r) {
      const float xv = a.x[(m0 + r) * a.ldx + k];
      for (int l = 0; l < kPanel; ++l) acc[r][l] += xv * w[l];
    }
  }
  const int64_t cols = a.n - p * kPanel < kPanel ? a.n - p * kPanel : kPanel;
  const float* scale = F == Format::kInt8 ? a.scales + (p * ((a.k + kKBlock - 1) / kKBlock) + kb / kKBlock) * kPanel
                                          : nullptr;
  for (int r = 0; r < R; ++r) {
    float* y = a.y + (m0 + r) * a.ldy + p * kPanel;
    for (int64_t j = 0; j < cols; ++j) {
      float s = acc[r][LaneOf<F>(static_cast<int>(j))];
      if constexpr (F == Format::kInt8) s = s * scale[j];
      if (kb == 0) {
        if (a.bias != nullptr) s = s + a.bias[p * kPanel + j];
        if (a.accumulate) s = y[j] + s;
      } else {
        s = y[j] + s;
      }
      y[j] = s;
    }
  }
}

template <Format F>
void Run(const MatMulArgs& a) {
  for (int64_t kb = 0; kb < a.k; kb += kKBlock) {
    const int64_t ke = kb + kKBlock < a.k ? kb + kKBlock : a.k;
    for (int64_t p = a.p0; p < a.p1; ++p) {
      int64_t m = 0;
      for (; m + kRows <= a.m; m += kRows) Rows<F, kRows>(a, m, p, kb, ke);
      for (; m < a.m; ++m) Rows<F, 1>(a, m, p, kb, ke);
    }
  }
}

}  // namespace

void pack_bands(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t band_rows, int64_t b0, int64_t b1,
                float* x_bands) {
  for (int64_t b = b0; b < b1; ++b) {
    float* dst = x_bands + b * band_rows * k;
    // Rows past m in the last band stay unset: a tile reads only the band's valid rows.
    for (int64_t i = 0; i < band_rows && b * band_rows + i < m; ++i) {
      const float* src = x + (b * band_rows + i) * ldx;
      for (int64_t c = 0; c < k; ++c) dst[c * band_rows + i] = src[c];
    }
  }
}

void matmul_bf16_portable(const MatMulArgs& a) { Run<Format::kBF16>(a); }
void matmul_f32_portable(const MatMulArgs& a) { Run<Format::kF32>(a); }
void matmul_int8_portable(const MatMulArgs& a) { Run<Format::kInt8>(a); }

}  // namespace phi::worker::cpu::kernels
