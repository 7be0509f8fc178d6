// CPU twins of the CUDA kernels (kernels.h): the same contracts on F32 host arrays, written
// for clarity, not speed. The GPU tests compare each kernel with its twin; the twins are
// plain C++ so CI (no GPU) tests them against naive references too.
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_KERNELS_CPU_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_KERNELS_CPU_H_

#include <cstdint>
#include <vector>

#include "services/worker/backends/cuda/kernels.h"

namespace phi::worker::cuda {

void layernorm_forward_cpu(const float* x, const int32_t* row_index, const float* gamma,
                           const float* beta, float* out, int rows, int dim, float eps);

void embedding_forward_cpu(const int32_t* tokens, const float* table, float* x, int num_tokens,
                           int vocab, int dim, int vocab_begin = 0);

// Same arguments as RotaryKvArgs, on F32 host arrays. The F32 caches hold what the GPU cache
// holds in its own units: with kFp8E4m3, fp8_e4m3_round_cpu(k / k_scale) (an exact E4M3
// value; fp8_e4m3_encode_cpu of it is the GPU's byte), with kBf16 the unrounded F32 value.
void rotary_kv_forward_cpu(float* qkv, int row_stride, const int32_t* positions,
                           const int32_t* slots, float* k_cache, float* v_cache, int num_tokens,
                           int num_heads, int head_dim, int rotary_dim, int block_size,
                           float theta, KvCacheDtype kv_dtype = KvCacheDtype::kBf16,
                           float k_scale = 1.0f, float v_scale = 1.0f);

// gelu_new of one value (transformers' tanh form), the reference of gelu_forward_cpu.
float gelu_new_scalar_cpu(float x);
void gelu_forward_cpu(const float* in, int in_stride, float* out, int out_stride, int rows,
                      int cols);

// The attention twins read F32 caches in the cache's units (see rotary_kv_forward_cpu): with
// kFp8E4m3 each element is taken as fp8_e4m3_round_cpu(element) * scale (the round is the
// identity on what the FP8 rotary twin wrote), with kBf16 as is.
void attention_decode_cpu(const float* q, int q_stride, const float* k_cache,
                          const float* v_cache, const int32_t* block_tables,
                          int max_blocks_per_seq, const int32_t* context_lens, float* out,
                          int out_stride, int num_seqs, int num_heads, int head_dim,
                          int block_size, float scale, KvCacheDtype kv_dtype = KvCacheDtype::kBf16,
                          float k_scale = 1.0f, float v_scale = 1.0f);

void attention_prefill_cpu(const float* q, int q_stride, const float* k_cache,
                           const float* v_cache, const int32_t* block_tables,
                           int max_blocks_per_seq, const int32_t* q_offset,
                           const int32_t* start_pos, const int32_t* num_new, float* out,
                           int out_stride, int num_seqs, int num_heads, int head_dim,
                           int block_size, float scale,
                           KvCacheDtype kv_dtype = KvCacheDtype::kBf16, float k_scale = 1.0f,
                           float v_scale = 1.0f);

// The candidate records of top_candidates_forward on host arrays (same arguments, host
// pointers). The log-sum-exp sums exp(double(v) - max) in id order like the engine's sampler.
void top_candidates_forward_cpu(const float* logits, int64_t ld, int width, int id0, int vocab_limit,
                                const int32_t* rows, const int32_t* counts, const int32_t* want_lse,
                                int num_rows, int max_count, void* out);

// D[M,N] = A[M,K] * W[N,K]^T + bias[N] + beta * D (row-major; bias may be null).
void gemm_bias_cpu(const float* a, const float* w, const float* bias, float* d, float beta,
                   int m, int n, int k);

// Round-trips a float through BF16 (round to nearest even), as the GPU stores it.
float bf16_round_cpu(float x);

// FP8 E4M3 (OCP: sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities; S.1111.111
// is NaN; largest finite 448, smallest subnormal 2^-9), as the GPU's
// __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) encodes: round to nearest even, finite
// values beyond 448 and infinities saturate to +-448, |x| <= 2^-10 gives a signed zero, NaN
// gives 0x7F whatever its sign (the F32 path canonicalises NaN first).
uint8_t fp8_e4m3_encode_cpu(float x);
// Exact value of a code (every E4M3 value is an F32); 0x7F and 0xFF decode to NaN.
float fp8_e4m3_decode_cpu(uint8_t code);
// decode(encode(x)): x as the FP8 cache holds it.
float fp8_e4m3_round_cpu(float x);

}  // namespace phi::worker::cuda

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_KERNELS_CPU_H_
