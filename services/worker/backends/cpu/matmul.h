// Y = X W^T + b over packed weight matrices, threaded over output columns.
// ref: DESIGN.md — the runner fuses [q|k|v|fc1] and [dense|fc2] into two such GEMMs.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "services/worker/backends/cpu/thread_pool.h"

namespace phi::cpu {

enum class WeightFormat { kF32, kBF16 };

enum class KernelPath {
  kAuto,      // AVX-512 (BF16 dot products for BF16 weights) when the CPU has it
  kPortable,  // plain C++; any x86-64 / other CPU
};

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

// Zero-filled, 64-byte aligned storage.
std::unique_ptr<uint8_t[], AlignedFree> AlignedAlloc(size_t bytes);

// A weight matrix of `rows` output features x `cols` input features, each row padded with
// zeros to `ld` (a multiple of 32) so kernels need no K tail.
class PackedMatrix {
 public:
  PackedMatrix() = default;
  PackedMatrix(WeightFormat format, int64_t rows, int64_t cols);

  WeightFormat format() const { return format_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t ld() const { return ld_; }
  int elem_bytes() const { return format_ == WeightFormat::kBF16 ? 2 : 4; }
  size_t bytes() const { return static_cast<size_t>(rows_ * ld_) * elem_bytes(); }
  // Bytes a GEMM reads (the unpadded payload).
  size_t payload_bytes() const { return static_cast<size_t>(rows_ * cols_) * elem_bytes(); }
  uint8_t* row(int64_t r) { return data_.get() + static_cast<size_t>(r * ld_) * elem_bytes(); }
  const uint8_t* row(int64_t r) const { return data_.get() + static_cast<size_t>(r * ld_) * elem_bytes(); }
  const void* data() const { return data_.get(); }

 private:
  WeightFormat format_ = WeightFormat::kBF16;
  int64_t rows_ = 0, cols_ = 0, ld_ = 0;
  std::unique_ptr<uint8_t[], AlignedFree> data_;
};

// Reusable buffer for the packed (padded, maybe BF16) copy of X.
struct MatMulScratch {
  std::unique_ptr<uint8_t[], AlignedFree> buf;
  size_t size = 0;
};

class MatMul {
 public:
  MatMul(KernelPath path, ThreadPool* pool);

  // y[m * ldy + n] (+)= sum_k x[m * ldx + k] * w[n, k] + bias[n], for m < M, n < w.rows().
  // bias may be null. accumulate: add into y (the residual) instead of overwriting.
  void Run(const float* x, int64_t m, int64_t ldx, const PackedMatrix& w, const float* bias, float* y,
           int64_t ldy, bool accumulate);

  bool uses_avx512_bf16() const { return bf16_avx512_; }
  bool uses_avx512_f32() const { return f32_avx512_; }

 private:
  ThreadPool* pool_;
  bool bf16_avx512_ = false;
  bool f32_avx512_ = false;
  MatMulScratch scratch_;
};

}  // namespace phi::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_H_
