// Included first in the emulated build's copy of every .cu file (instrument_kernel_source.py),
// which is compiled as C++ with PHI_CUDA_EMULATION defined: the CUDA headers first (their host
// paths give the BF16 / FP16 / FP8 types and conversions), then the device built-ins as calls
// into the emulator (cuda_emu.h). Kernels keep their source; only inline PTX needs an emulated twin
// (mma.sync in attention_prefill_mma.cu, griddepcontrol in pdl.cuh, which is a no-op here).
#ifndef PHI_TESTS_CUDA_EMU_CUDA_EMU_DEVICE_H_
#define PHI_TESTS_CUDA_EMU_CUDA_EMU_DEVICE_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tests/cuda_emu/cuda_emu.h"

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __launch_bounds__
#define __launch_bounds__(...)
// One copy per OS thread: blocks of one launch run one after another on a thread, and tests
// that run two tensor-parallel ranks on two threads get separate shared memory.
#undef __shared__
#define __shared__ thread_local

// Inserted by instrument_kernel_source.py (see cuda_emu.h).
#define CUDA_EMU_STATIC_SHARED(name) ::cuda_emu::PoisonStaticShared(&(name), sizeof(name))
#define CUDA_EMU_LAUNCH_BOUNDS(max_threads) \
  ::cuda_emu::CheckLaunchBounds(static_cast<long long>(max_threads))

#define threadIdx (::cuda_emu::Current().thread_idx)
#define blockIdx (::cuda_emu::Current().block_idx)
#define blockDim (::cuda_emu::Current().block_dim)
#define gridDim (::cuda_emu::Current().grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::cuda_emu::SyncThreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) {}
inline void __threadfence() {}
inline void __threadfence_block() {}

namespace cuda_emu_detail {
template <typename T>
uint64_t ToBits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T FromBits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
template <typename T>
T Shuffle(::cuda_emu::ShuffleKind kind, unsigned mask, T v, int operand, int width) {
  return FromBits<T>(::cuda_emu::WarpShuffle(kind, mask, ToBits(v), operand, width));
}
}  // namespace cuda_emu_detail

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return cuda_emu_detail::Shuffle(::cuda_emu::ShuffleKind::kIndex, mask, v, src, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu_detail::Shuffle(::cuda_emu::ShuffleKind::kUp, mask, v, static_cast<int>(delta),
                                  width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu_detail::Shuffle(::cuda_emu::ShuffleKind::kDown, mask, v,
                                  static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return cuda_emu_detail::Shuffle(::cuda_emu::ShuffleKind::kXor, mask, v, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::cuda_emu::WarpBallot(mask, predicate != 0);
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  return (__ballot_sync(mask, predicate) & mask) == (__ballot_sync(mask, 1) & mask);
}
template <typename T>
unsigned __match_any_sync(unsigned mask, T v) {
  return ::cuda_emu::WarpMatchAny(mask, cuda_emu_detail::ToBits(v));
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline unsigned __float_as_uint(float x) { return cuda_emu_detail::FromBits<unsigned>(cuda_emu_detail::ToBits(x)); }
inline float __uint_as_float(unsigned x) { return cuda_emu_detail::FromBits<float>(x); }
inline int __float_as_int(float x) { return cuda_emu_detail::FromBits<int>(cuda_emu_detail::ToBits(x)); }
inline float __int_as_float(int x) { return cuda_emu_detail::FromBits<float>(static_cast<uint32_t>(x)); }

// Cache-hinted loads are plain loads.
template <typename T>
T __ldg(const T* p) { return *p; }
template <typename T>
T __ldcg(const T* p) { return *p; }
template <typename T>
T __ldcs(const T* p) { return *p; }
template <typename T>
T __ldlu(const T* p) { return *p; }
template <typename T>
void __stcg(T* p, T v) { *p = v; }
template <typename T>
void __stcs(T* p, T v) { *p = v; }

// Fibers of one OS thread never run at the same time: atomics are plain read-modify-writes.
template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  const T old = *p;
  *p = old < v ? v : old;
  return old;
}
template <typename T>
T atomicMin(T* p, T v) {
  const T old = *p;
  *p = v < old ? v : old;
  return old;
}

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

// CUDA's device min / max overloads for mixed integer and floating arguments.
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

#endif  // PHI_TESTS_CUDA_EMU_CUDA_EMU_DEVICE_H_
