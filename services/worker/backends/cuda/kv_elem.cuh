// Device-side access to KV cache elements for the kernels templated on the cache type
// (rotary_kv.cu, attention_decode.cu, attention_prefill.cu): how many elements one 16-byte
// load holds, their conversion to F32, and the store of an F32 value. BF16 reproduces the
// arithmetic the kernels had before the FP8 option; FP8 E4M3 stores value / scale rounded to
// nearest even and saturated to +-448 (cvt.rn.satfinite, as __nv_cvt_float_to_fp8 with
// __NV_SATFINITE) and reads code * scale, the scale folded into q and the output by the
// attention kernels.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_KV_ELEM_CUH_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_KV_ELEM_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace phi::worker::cuda {

using fp8_e4m3 = __nv_fp8_e4m3;
static_assert(sizeof(fp8_e4m3) == 1, "one byte per FP8 element");

template <typename T>
struct KvElem;

template <>
struct KvElem<__nv_bfloat16> {
  static constexpr bool kFp8 = false;
  static constexpr int kPerVec = 8;  // elements per 16-byte load
  __device__ __forceinline__ static void ToFloat(const uint4& raw, float* f) {
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 v = __bfloat1622float2(p[e]);
      f[2 * e] = v.x;
      f[2 * e + 1] = v.y;
    }
  }
  // The scale is an FP8 notion: BF16 stores the value itself.
  __device__ __forceinline__ static __nv_bfloat16 FromFloat(float x, float /*scale*/) {
    return __float2bfloat16(x);
  }
};

template <>
struct KvElem<fp8_e4m3> {
  static constexpr bool kFp8 = true;
  static constexpr int kPerVec = 16;
  // Pairs through cvt.rn.f16x2.e4m3x2 (one instruction on sm_89+; E4M3 is exact in F16, and
  // F16 in F32).
  __device__ __forceinline__ static void ToFloat(const uint4& raw, float* f) {
    const __nv_fp8x2_storage_t* p = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float2 v = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(p[e], __NV_E4M3)));
      f[2 * e] = v.x;
      f[2 * e + 1] = v.y;
    }
  }
  // Division, not a multiply by 1/scale: IEEE division is what the CPU twin does too, so the
  // stored byte is the twin's byte.
  __device__ __forceinline__ static fp8_e4m3 FromFloat(float x, float scale) {
    fp8_e4m3 r;
    r.__x = __nv_cvt_float_to_fp8(x / scale, __NV_SATFINITE, __NV_E4M3);
    return r;
  }
};

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_KV_ELEM_CUH_
