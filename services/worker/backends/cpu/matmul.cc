#include "services/worker/backends/cpu/matmul.h"

#include <algorithm>
#include <cstring>

#include "services/worker/backends/cpu/cpu_features.h"
#include "services/worker/backends/cpu/matmul_kernels.h"

namespace phi::cpu {

std::unique_ptr<uint8_t[], AlignedFree> AlignedAlloc(size_t bytes) {
  const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return std::unique_ptr<uint8_t[], AlignedFree>(static_cast<uint8_t*>(p));
}

PackedMatrix::PackedMatrix(WeightFormat format, int64_t rows, int64_t cols)
    : format_(format), rows_(rows), cols_(cols) {
  data_ = AlignedAlloc(bytes());
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
  if (format_ == WeightFormat::kBF16) {
    ScatterBlock(reinterpret_cast<uint16_t*>(data_.get()), cols_, row0, col0, rows, cols,
                 static_cast<const uint16_t*>(src), /*bf16_lanes=*/true);
  } else {
    ScatterBlock(reinterpret_cast<float*>(data_.get()), cols_, row0, col0, rows, cols,
                 static_cast<const float*>(src), /*bf16_lanes=*/false);
  }
}

MatMul::MatMul(KernelPath path, ThreadPool* pool) : pool_(pool) {
  avx512_ = path == KernelPath::kAuto && CpuHasAvx512F();
}

void MatMul::Run(const float* x, int64_t m, int64_t ldx, const PackedMatrix& w, const float* bias, float* y,
                 int64_t ldy, bool accumulate) {
  if (m <= 0) return;
  kernels::MatMulArgs args;
  args.x = x;
  args.m = m;
  args.ldx = ldx;
  args.w = w.data();
  args.k = w.cols();
  args.n = w.rows();
  args.bias = bias;
  args.y = y;
  args.ldy = ldy;
  args.accumulate = accumulate;
  if (avx512_) {
    const int64_t bands = (m + kernels::kBandRows - 1) / kernels::kBandRows;
    const size_t need = static_cast<size_t>(bands * kernels::kBandRows * w.cols()) * sizeof(float);
    if (bands_bytes_ < need) {
      bands_ = AlignedAlloc(need);
      bands_bytes_ = need;
    }
    float* xb = reinterpret_cast<float*>(bands_.get());
    pool_->ParallelFor(bands, 1, [&](int64_t b, int64_t e) { kernels::pack_bands(x, m, ldx, w.cols(), b, e, xb); });
    args.x_bands = xb;
  }
  const bool bf16 = w.format() == WeightFormat::kBF16;
  void (*kernel)(const kernels::MatMulArgs&) =
      bf16 ? (avx512_ ? kernels::matmul_bf16_avx512 : kernels::matmul_bf16_portable)
           : (avx512_ ? kernels::matmul_f32_avx512 : kernels::matmul_f32_portable);
  // Threads own disjoint panels (output columns), so accumulating into y needs no locks.
  pool_->ParallelFor(w.panels(), 1, [&](int64_t b, int64_t e) {
    kernels::MatMulArgs a = args;
    a.p0 = b;
    a.p1 = e;
    kernel(a);
  });
}

}  // namespace phi::cpu
