// Y = X W^T + b over weight matrices stored in column panels, threaded over panels.
// The runner fuses [q|k|v|fc1] and [dense|fc2] into two such GEMMs per layer
// (docs/architecture.md, "CPU backend").
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <vector>

#include "services/worker/backends/cpu/cpu_features.h"
#include "services/worker/backends/cpu/thread_pool.h"

namespace phi::worker::cpu {

// kInt8: symmetric 8-bit weights with one F32 scale per output feature and K block of
// kernels::kKBlock columns (w = q * scale, |q| <= 127): the group is the K block of the
// GEMMs' arithmetic contract, so the scale is applied once per block sum, outside the
// inner loop (matmul_kernels.h).
enum class WeightFormat { kF32, kBF16, kInt8 };

std::string_view WeightFormatName(WeightFormat f);  // "f32", "bf16", "int8"

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

// Zero-filled, 64-byte aligned storage.
std::unique_ptr<uint8_t[], AlignedFree> AlignedAlloc(size_t bytes);

// A weight matrix of `rows` output features x `cols` input features, stored as panels of
// 32 output features: panel p holds, for k = 0 .. cols-1, the 32 weights w[32p + j, k]
// side by side (one 64-byte line per k in BF16, 32 bytes in INT8). The GEMM broadcasts one
// activation and multiplies it with a whole line, so every weight byte is read once per
// step in order, and BF16 widens to F32 with one shuffle. Rows past `rows` in the last
// panel are zero.
class PackedMatrix {
 public:
  static constexpr int64_t kPanel = 32;

  PackedMatrix() = default;
  // F32 or BF16; INT8 matrices come from Quantize().
  PackedMatrix(WeightFormat format, int64_t rows, int64_t cols);

  // The INT8 matrix of an F32 one: per output feature and K block, scale = max|w| / 127
  // and q = round-to-nearest-even(w / scale) (a block of zeros gets scale 0).
  static PackedMatrix QuantizeInt8(const PackedMatrix& f32);

  WeightFormat format() const { return format_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t panels() const { return (rows_ + kPanel - 1) / kPanel; }
  int64_t k_blocks() const;
  int elem_bytes() const { return format_ == WeightFormat::kF32 ? 4 : format_ == WeightFormat::kBF16 ? 2 : 1; }
  size_t bytes() const { return static_cast<size_t>(panels() * kPanel * cols_) * elem_bytes(); }
  // Bytes a GEMM reads (the unpadded payload, INT8 scales included).
  size_t payload_bytes() const;
  // Bytes held (padded panels and INT8 scales).
  size_t memory_bytes() const;
  const void* data() const { return data_.get(); }
  // INT8: [panels][k_blocks][32] scales; null otherwise.
  const float* scales() const { return reinterpret_cast<const float*>(scales_.get()); }

  // Copies a row-major block src[rows x cols] (elements of format(): uint16_t BF16 bits or
  // float) into rows [row0, row0 + rows) and columns [col0, col0 + cols). F32/BF16 only.
  void SetBlock(int64_t row0, int64_t col0, int64_t rows, int64_t cols, const void* src);

  // Weight w[row, col] as F32 (the dequantized value for INT8): tests and accuracy tools.
  float At(int64_t row, int64_t col) const;

 private:
  WeightFormat format_ = WeightFormat::kBF16;
  int64_t rows_ = 0, cols_ = 0;
  std::unique_ptr<uint8_t[], AlignedFree> data_;
  std::unique_ptr<uint8_t[], AlignedFree> scales_;
};

class MatMul {
 public:
  // `isa` must be one the CPU runs (ResolveKernelPath).
  MatMul(Isa isa, ThreadPool* pool);

  // y[m * ldy + n] (+)= sum_k x[m * ldx + k] * w[n, k] + bias[n], for m < M, n < w.rows().
  // bias may be null. accumulate: add into y (the residual) instead of overwriting.
  // Each output is computed by the same sequence of operations whatever M is, so a
  // sequence's result does not depend on what else is in the batch. Activations stay F32
  // (BF16 and INT8 weights are widened, never the activations rounded), except on
  // Isa::kAvx512Bf16 with BF16 weights, which rounds them to BF16 for vdpbf16ps
  // (matmul_kernels.h).
  void Run(const float* x, int64_t m, int64_t ldx, const PackedMatrix& w, const float* bias, float* y,
           int64_t ldy, bool accumulate);

  Isa isa() const { return isa_; }

 private:
  ThreadPool* pool_;
  Isa isa_;
  std::unique_ptr<uint8_t[], AlignedFree> bands_;  // activations repacked for the SIMD kernels
  size_t bands_bytes_ = 0;
};

}  // namespace phi::worker::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_H_
