#include "services/worker/backends/cpu/matmul.h"

#include <algorithm>
#include <cstring>

#include "services/worker/backends/cpu/cpu_features.h"
#include "services/worker/backends/cpu/matmul_kernels.h"
#include "services/worker/model/dtype.h"

namespace phi::cpu {

std::unique_ptr<uint8_t[], AlignedFree> AlignedAlloc(size_t bytes) {
  const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return std::unique_ptr<uint8_t[], AlignedFree>(static_cast<uint8_t*>(p));
}

PackedMatrix::PackedMatrix(WeightFormat format, int64_t rows, int64_t cols)
    : format_(format), rows_(rows), cols_(cols), ld_((cols + 31) / 32 * 32) {
  data_ = AlignedAlloc(bytes());
}

MatMul::MatMul(KernelPath path, ThreadPool* pool) : pool_(pool) {
  if (path == KernelPath::kAuto) {
    bf16_avx512_ = CpuHasAvx512Bf16();
    f32_avx512_ = CpuHasAvx512F();
  }
}

void MatMul::Run(const float* x, int64_t m, int64_t ldx, const PackedMatrix& w, const float* bias, float* y,
                 int64_t ldy, bool accumulate) {
  if (m <= 0) return;
  const bool bf16 = w.format() == WeightFormat::kBF16;
  const size_t need = static_cast<size_t>(m * w.ld()) * w.elem_bytes();
  if (scratch_.size < need) {
    scratch_.buf = AlignedAlloc(need);
    scratch_.size = need;
  }
  // Pack X: rows padded with zeros to ld, rounded to BF16 for BF16 weights.
  const int64_t k = w.cols();
  pool_->ParallelFor(m, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* src = x + r * ldx;
      if (bf16) {
        uint16_t* dst = reinterpret_cast<uint16_t*>(scratch_.buf.get()) + r * w.ld();
        for (int64_t i = 0; i < k; ++i) dst[i] = model::F32ToBf16(src[i]);
        std::fill(dst + k, dst + w.ld(), uint16_t{0});
      } else {
        float* dst = reinterpret_cast<float*>(scratch_.buf.get()) + r * w.ld();
        std::memcpy(dst, src, static_cast<size_t>(k) * 4);
        std::fill(dst + k, dst + w.ld(), 0.0f);
      }
    }
  });
  kernels::MatMulArgs args;
  args.x = scratch_.buf.get();
  args.m = m;
  args.ldx = w.ld();
  args.w = w.data();
  args.ldw = w.ld();
  args.bias = bias;
  args.y = y;
  args.ldy = ldy;
  args.accumulate = accumulate;
  void (*kernel)(const kernels::MatMulArgs&) =
      bf16 ? (bf16_avx512_ ? kernels::matmul_bf16_avx512 : kernels::matmul_bf16_portable)
           : (f32_avx512_ ? kernels::matmul_f32_avx512 : kernels::matmul_f32_portable);
  // Column ranges in multiples of 8 rows so every thread gets whole register tiles.
  pool_->ParallelFor(w.rows(), 8, [&](int64_t b, int64_t e) {
    kernels::MatMulArgs a = args;
    a.n0 = b;
    a.n1 = e;
    kernel(a);
  });
}

}  // namespace phi::cpu
