// Element-wise and row-wise operations of the Phi forward pass, F32.
//
// LayerNorm and gelu_new have one kernel per Isa (cpu_features.h), picked by the caller's
// Isa, never by the host: layer_norm_portable and gelu_new_portable are the references
// (plain C++, baseline instruction set), kernels::*_avx2 / *_avx512 the SIMD ones. The
// AVX2 and AVX-512 kernels of each op run the same operations in the same order, so they
// agree bit for bit; they differ from the portable ones within the bounds ops_test states.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_OPS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_OPS_H_

#include <cstdint>

#include "services/worker/backends/cpu/cpu_features.h"

namespace phi::worker::cpu {

// y = (x - mean) / sqrt(var + eps) * gamma + beta over n >= 1 elements (torch.nn.LayerNorm,
// biased variance). Statistics in double, two passes (mean, then the sum of squared
// deviations); rstd = float(1 / sqrt(var + eps)) and mean rounded to float, then
// y = ((x - mean) * rstd) * gamma + beta in float.
//   portable: the sums in index order, y with separate multiplies and adds.
//   SIMD: the sums in 8 double lanes (lane l: elements 8c + l, c in order), reduced as
//   (l + l+4), then (l + l+2), then lane 0 + lane 1; deviations squared with FMA; y with
//   one FMA for "* gamma + beta".
void layer_norm_portable(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y);

// y = gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), transformers'
// NewGELUActivation (tanh approximation), with tanh(u) = 1 - 2 / (exp(2u) + 1).
void gelu_new_portable(const float* x, int64_t n, float* y);

namespace kernels {
// The same; the caller checked that the CPU runs them.
void layer_norm_avx512(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y);
void layer_norm_avx2(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y);
void gelu_new_avx512(const float* x, int64_t n, float* y);
void gelu_new_avx2(const float* x, int64_t n, float* y);
}  // namespace kernels

// The kernels of `isa` (the caller checked that the CPU runs it).
void LayerNorm(const float* x, const float* gamma, const float* beta, double eps, int64_t n, float* y, Isa isa);
void GeluNew(const float* x, int64_t n, float* y, Isa isa);

// Rotate-half rotary embedding on the first 2*half dims of one head vector `v`:
// v[i] = v[i] cos[i] - v[i+half] sin[i]; v[i+half] = v[i+half] cos[i] + v[i] sin[i].
// ref: transformers apply_rotary_pos_emb / rotate_half. One function for every Isa: GCC
// target_clones picks its clone by the host, and a clone with FMA may contract the
// products, so its last bit can differ between hosts (not between Isas on one host).
void Rotary(float* v, const float* cos, const float* sin, int half);

}  // namespace phi::worker::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_OPS_H_
