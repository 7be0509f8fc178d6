// Matrix-multiply kernels: y[m, n] (+)= dot(x[m, :], w[n, :]) + bias[n] for n in [n0, n1).
// Weights are rows of K elements padded with zeros to `ldw` (a multiple of 32); x rows are
// padded the same way. BF16 kernels take BF16 activations (products of two BF16 values
// are exact in F32; sums are F32), as AVX-512 BF16's dot product does.
//
// These declarations use only plain types: the AVX-512 kernels are compiled with
// -mavx512* flags, and an inline function shared with other files could otherwise be
// emitted with AVX-512 instructions and picked by the linker for machines without them.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_KERNELS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_KERNELS_H_

#include <cstdint>

namespace phi::cpu::kernels {

struct MatMulArgs {
  const void* x = nullptr;  // M rows, stride ldx elements (uint16_t BF16 or float)
  int64_t m = 0;
  int64_t ldx = 0;
  const void* w = nullptr;  // rows of ldw elements (uint16_t BF16 or float)
  int64_t ldw = 0;
  int64_t n0 = 0, n1 = 0;   // output columns to compute
  const float* bias = nullptr;  // may be null
  float* y = nullptr;       // M rows, stride ldy floats
  int64_t ldy = 0;
  bool accumulate = false;  // y += result instead of y = result
};

void matmul_bf16_avx512(const MatMulArgs& a);
void matmul_f32_avx512(const MatMulArgs& a);
void matmul_bf16_portable(const MatMulArgs& a);
void matmul_f32_portable(const MatMulArgs& a);

}  // namespace phi::cpu::kernels

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_KERNELS_H_
