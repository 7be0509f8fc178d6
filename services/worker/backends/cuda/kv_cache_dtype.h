// Element type of the paged KV cache (PhiCudaOptions::kv_dtype). BF16 is the default and the
// exact path; FP8 E4M3 halves the bytes every decode step reads (at 256 sequences the KV, not
// the weights, is most of a step's traffic) and doubles the blocks that fit, at the price of a
// 3-bit mantissa. ref: vLLM / TensorRT-LLM kv_cache_dtype=fp8_e4m3; OCP 8-bit floating point
// specification (E4M3: bias 7, no infinities, 0x7F/0xFF NaN, max finite 448).
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_KV_CACHE_DTYPE_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_KV_CACHE_DTYPE_H_

#include <string_view>

namespace phi::worker::cuda {

enum class KvCacheDtype { kBf16, kFp8E4m3 };

inline constexpr int kv_cache_dtype_bytes(KvCacheDtype d) {
  return d == KvCacheDtype::kFp8E4m3 ? 1 : 2;
}

// The name the flags use: "bf16" or "fp8".
inline constexpr const char* kv_cache_dtype_name(KvCacheDtype d) {
  return d == KvCacheDtype::kFp8E4m3 ? "fp8" : "bf16";
}

// "bf16", "fp8" or "fp8_e4m3" (vLLM's spelling); false for anything else.
inline bool ParseKvCacheDtype(std::string_view s, KvCacheDtype* out) {
  if (s == "bf16") {
    *out = KvCacheDtype::kBf16;
  } else if (s == "fp8" || s == "fp8_e4m3") {
    *out = KvCacheDtype::kFp8E4m3;
  } else {
    return false;
  }
  return true;
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_KV_CACHE_DTYPE_H_
