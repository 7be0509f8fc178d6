// Y = X W^T + b over weight matrices stored in column panels, threaded over panels.
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
  kAuto,      // AVX-512 F32 FMA kernels when the CPU has AVX-512F
  kPortable,  // plain C++; any x86-64 / other CPU
};

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

// Zero-filled, 64-byte aligned storage.
std::unique_ptr<uint8_t[], AlignedFree> AlignedAlloc(size_t bytes);

// A weight matrix of `rows` output features x `cols` input features, stored as panels of
// 32 output features: panel p holds, for k = 0 .. cols-1, the 32 weights w[32p + j, k]
// side by side (one 64-byte line per k in BF16). The GEMM broadcasts one activation and
// multiplies it with a whole line, so every weight byte is read once per step in order,
// and BF16 widens to F32 with one shuffle. Rows past `rows` in the last panel are zero.
class PackedMatrix {
 public:
  static constexpr int64_t kPanel = 32;

  PackedMatrix() = default;
  PackedMatrix(WeightFormat format, int64_t rows, int64_t cols);

  WeightFormat format() const { return format_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t panels() const { return (rows_ + kPanel - 1) / kPanel; }
  int elem_bytes() const { return format_ == WeightFormat::kBF16 ? 2 : 4; }
  size_t bytes() const { return static_cast<size_t>(panels() * kPanel * cols_) * elem_bytes(); }
  // Bytes a GEMM reads (the unpadded payload).
  size_t payload_bytes() const { return static_cast<size_t>(rows_ * cols_) * elem_bytes(); }
  const void* data() const { return data_.get(); }

  // Copies a row-major block src[rows x cols] (elements of format(): uint16_t BF16 bits or
  // float) into rows [row0, row0 + rows) and columns [col0, col0 + cols).
  void SetBlock(int64_t row0, int64_t col0, int64_t rows, int64_t cols, const void* src);

 private:
  WeightFormat format_ = WeightFormat::kBF16;
  int64_t rows_ = 0, cols_ = 0;
  std::unique_ptr<uint8_t[], AlignedFree> data_;
};

class MatMul {
 public:
  MatMul(KernelPath path, ThreadPool* pool);

  // y[m * ldy + n] (+)= sum_k x[m * ldx + k] * w[n, k] + bias[n], for m < M, n < w.rows().
  // bias may be null. accumulate: add into y (the residual) instead of overwriting.
  // Activations stay F32 (BF16 weights are widened, never the activations rounded), and
  // each output is computed by the same sequence of operations whatever M is, so a
  // sequence's result does not depend on what else is in the batch.
  void Run(const float* x, int64_t m, int64_t ldx, const PackedMatrix& w, const float* bias, float* y,
           int64_t ldy, bool accumulate);

  bool uses_avx512() const { return avx512_; }

 private:
  ThreadPool* pool_;
  bool avx512_ = false;
  std::unique_ptr<uint8_t[], AlignedFree> bands_;  // activations repacked for the AVX-512 kernels
  size_t bands_bytes_ = 0;
};

}  // namespace phi::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_H_
