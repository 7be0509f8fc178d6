#include "services/worker/backends/cpu/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "services/worker/backends/cpu/cpu_features.h"
#include "services/worker/backends/cpu/matmul_kernels.h"

namespace phi::worker::cpu {

std::unique_ptr<uint8_t[], AlignedFree> AlignedAlloc(size_t bytes) {
  const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return std::unique_ptr<uint8_t[], AlignedFree>(static_cast<uint8_t*>(p));
}

std::string_view WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return "f32";
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kInt8: return "int8";
  }
  return "?";
}

PackedMatrix::PackedMatrix(WeightFormat format, int64_t rows, int64_t cols)
    : format_(format), rows_(rows), cols_(cols) {
  data_ = AlignedAlloc(bytes());
  if (format_ == WeightFormat::kInt8) {
    scales_ = AlignedAlloc(static_cast<size_t>(panels() * k_blocks() * kPanel) * sizeof(float));
  }
}

int64_t PackedMatrix::k_blocks() const { return (cols_ + kernels::kKBlock - 1) / kernels::kKBlock; }

size_t PackedMatrix::payload_bytes() const {
  size_t b = static_cast<size_t>(rows_ * cols_) * elem_bytes();
  if (format_ == WeightFormat::kInt8) b += static_cast<size_t>(rows_ * k_blocks()) * sizeof(float);
  return b;
}

size_t PackedMatrix::memory_bytes() const {
  size_t b = bytes();
  if (format_ == WeightFormat::kInt8) b += static_cast<size_t>(panels() * k_blocks() * kPanel) * sizeof(float);
  return b;
}

PackedMatrix PackedMatrix::QuantizeInt8(const PackedMatrix& f32) {
  PackedMatrix q(WeightFormat::kInt8, f32.rows_, f32.cols_);
  const float* src = reinterpret_cast<const float*>(f32.data_.get());
  int8_t* dst = reinterpret_cast<int8_t*>(q.data_.get());
  float* scales = reinterpret_cast<float*>(q.scales_.get());
  const int64_t K = f32.cols_, blocks = q.k_blocks();
  for (int64_t p = 0; p < q.panels(); ++p) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b * kernels::kKBlock, k1 = std::min(K, k0 + kernels::kKBlock);
      float amax[kPanel] = {};
      for (int64_t k = k0; k < k1; ++k) {
        const float* line = src + (p * K + k) * kPanel;
        for (int j = 0; j < kPanel; ++j) amax[j] = std::max(amax[j], std::fabs(line[j]));
      }
      float* scale = scales + (p * blocks + b) * kPanel;
      for (int j = 0; j < kPanel; ++j) scale[j] = amax[j] / 127.0f;
      for (int64_t k = k0; k < k1; ++k) {
        const float* line = src + (p * K + k) * kPanel;
        int8_t* out = dst + (p * K + k) * kPanel;
        for (int j = 0; j < kPanel; ++j) {
          const float v = scale[j] > 0.0f ? std::nearbyint(line[j] / scale[j]) : 0.0f;
          out[j] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
        }
      }
    }
  }
  return q;
}

float PackedMatrix::At(int64_t row, int64_t col) const {
  const int64_t panel = row / kPanel, j = row % kPanel, line = (panel * cols_ + col) * kPanel;
  switch (format_) {
    case WeightFormat::kF32: return reinterpret_cast<const float*>(data_.get())[line + j];
    case WeightFormat::kBF16: {
      const uint32_t bits = static_cast<uint32_t>(
                                reinterpret_cast<const uint16_t*>(data_.get())[line + kernels::Bf16LaneOf(static_cast<int>(j))])
                            << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case WeightFormat::kInt8:
      return static_cast<float>(reinterpret_cast<const int8_t*>(data_.get())[line + j]) *
             scales()[(panel * k_blocks() + col / kernels::kKBlock) * kPanel + j];
  }
  return 0.0f;
}

namespace {

// Rows that share a panel are copied together, k-line by k-line, so the writes are
// sequential 64/128-byte lines (~5x faster than row by row with 64-byte strides).
template <typename T>
void ScatterBlock(T* panels, int64_t cols_total, int64_t row0, int64_t col0, int64_t rows, int64_t cols,
                  const T* src, bool bf16_lanes) {
  constexpr int64_t P = PackedMatrix::kPanel;
  for (int64_t r = 0; r < rows;) {
    const int64_t panel = (row0 + r) / P;
    const int64_t j0 = (row0 + r) % P;
    const int64_t n = std::min(P - j0, rows - r);  // rows of this panel in the block
    int64_t lane[P];
    const T* row_src[P];
    for (int64_t i = 0; i < n; ++i) {
      lane[i] = bf16_lanes ? kernels::Bf16LaneOf(static_cast<int>(j0 + i)) : j0 + i;
      row_src[i] = src + (r + i) * cols;
    }
    T* dst = panels + (panel * cols_total + col0) * P;
    for (int64_t c = 0; c < cols; ++c, dst += P) {
      for (int64_t i = 0; i < n; ++i) dst[lane[i]] = row_src[i][c];
    }
    r += n;
  }
}

}  // namespace

void PackedMatrix::SetBlock(int64_t row0, int64_t col0, int64_t rows, int64_t cols, const void* src) {
  if (format_ == WeightFormat::kInt8) std::abort();  // INT8 matrices are made by QuantizeInt8
  if (format_ == WeightFormat::kBF16) {
    ScatterBlock(reinterpret_cast<uint16_t*>(data_.get()), cols_, row0, col0, rows, cols,
                 static_cast<const uint16_t*>(src), /*bf16_lanes=*/true);
  } else {
    ScatterBlock(reinterpret_cast<float*>(data_.get()), cols_, row0, col0, rows, cols,
                 static_cast<const float*>(src), /*bf16_lanes=*/false);
  }
}

MatMul::MatMul(Isa isa, ThreadPool* pool) : pool_(pool), isa_(isa) {}

namespace {

using Kernel = void (*)(const kernels::MatMulArgs&);

// How a kernel reads the activations: straight from x, F32 bands (pack_bands), or BF16
// pairs in bands (pack_bands_bf16_pairs).
enum class Acts { kRows, kF32Bands, kBf16PairBands };

struct KernelChoice {
  Kernel kernel;
  Acts acts;
  int64_t band_rows;  // 0 for kRows
};

constexpr int64_t k512 = kernels::kBandRowsAvx512, k2 = kernels::kBandRowsAvx2;
constexpr KernelChoice kKernels[4][3] = {
    // F32, BF16, INT8 weights; one row per Isa, in its enum order
    {{kernels::matmul_f32_portable, Acts::kRows, 0},
     {kernels::matmul_bf16_portable, Acts::kRows, 0},
     {kernels::matmul_int8_portable, Acts::kRows, 0}},
    {{kernels::matmul_f32_avx2, Acts::kF32Bands, k2},
     {kernels::matmul_bf16_avx2, Acts::kF32Bands, k2},
     {kernels::matmul_int8_avx2, Acts::kF32Bands, k2}},
    {{kernels::matmul_f32_avx512, Acts::kF32Bands, k512},
     {kernels::matmul_bf16_avx512, Acts::kF32Bands, k512},
     {kernels::matmul_int8_avx512, Acts::kF32Bands, k512}},
    // avx512bf16: vdpbf16ps for BF16 weights only; F32 and INT8 weights are AVX-512's.
    {{kernels::matmul_f32_avx512, Acts::kF32Bands, k512},
     {kernels::matmul_bf16dot_avx512bf16, Acts::kBf16PairBands, k512},
     {kernels::matmul_int8_avx512, Acts::kF32Bands, k512}},
};
static_assert(static_cast<int>(Isa::kPortable) == 0 && static_cast<int>(Isa::kAvx2) == 1 &&
              static_cast<int>(Isa::kAvx512) == 2 && static_cast<int>(Isa::kAvx512Bf16) == 3);
static_assert(static_cast<int>(WeightFormat::kF32) == 0 && static_cast<int>(WeightFormat::kBF16) == 1 &&
              static_cast<int>(WeightFormat::kInt8) == 2);

const KernelChoice& PickKernel(Isa isa, WeightFormat f) {
  return kKernels[static_cast<int>(isa)][static_cast<int>(f)];
}

}  // namespace

void MatMul::Run(const float* x, int64_t m, int64_t ldx, const PackedMatrix& w, const float* bias, float* y,
                 int64_t ldy, bool accumulate) {
  if (m <= 0) return;
  kernels::MatMulArgs args;
  args.x = x;
  args.m = m;
  args.ldx = ldx;
  args.w = w.data();
  args.scales = w.scales();
  args.k = w.cols();
  args.n = w.rows();
  args.bias = bias;
  args.y = y;
  args.ldy = ldy;
  args.accumulate = accumulate;
  const KernelChoice& choice = PickKernel(isa_, w.format());
  if (choice.acts != Acts::kRows) {
    const int64_t rows = choice.band_rows;
    const int64_t bands = (m + rows - 1) / rows;
    // Per band row: k floats, or ceil(k / 2) BF16 pairs of 4 bytes.
    const int64_t row_bytes = choice.acts == Acts::kF32Bands ? w.cols() * 4 : (w.cols() + 1) / 2 * 4;
    const size_t need = static_cast<size_t>(bands * rows * row_bytes);
    if (bands_bytes_ < need) {
      bands_ = AlignedAlloc(need);
      bands_bytes_ = need;
    }
    if (choice.acts == Acts::kF32Bands) {
      float* xb = reinterpret_cast<float*>(bands_.get());
      pool_->ParallelFor(bands, 1,
                         [&](int64_t b, int64_t e) { kernels::pack_bands(x, m, ldx, w.cols(), rows, b, e, xb); });
      args.x_bands = xb;
    } else {
      uint32_t* xp = reinterpret_cast<uint32_t*>(bands_.get());
      pool_->ParallelFor(bands, 1, [&](int64_t b, int64_t e) {
        kernels::pack_bands_bf16_pairs(x, m, ldx, w.cols(), rows, b, e, xp);
      });
      args.x_bf16_pairs = xp;
    }
    args.band_rows = rows;
  }
  const Kernel kernel = choice.kernel;
  // Threads own disjoint panels (output columns), so accumulating into y needs no locks.
  pool_->ParallelFor(w.panels(), 1, [&](int64_t b, int64_t e) {
    kernels::MatMulArgs a = args;
    a.p0 = b;
    a.p1 = e;
    kernel(a);
  });
}

}  // namespace phi::worker::cpu
