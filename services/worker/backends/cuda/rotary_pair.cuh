// One head's rotary embedding and K/V cache store, pair by pair: the arithmetic shared by
// rotary_kv_forward (prefill and unfused decode) and decode attention with rotary fused
// (PagedAttentionArgs::new_slots), so both paths store and attend to the same bits.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_ROTARY_PAIR_CUH_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_ROTARY_PAIR_CUH_

#include <cuda_bf16.h>

#include "services/worker/backends/cuda/kv_elem.cuh"

namespace phi::worker::cuda {

// Pair j (0 <= j < head_dim / 2) of one head at position `pos`: for j < rotary_dim / 2 the
// rotate-half pair (j, j + rotary_dim / 2), as transformers (inv_freq = 1 / theta^(2j /
// rotary_dim) in F32, angle = pos * inv_freq); otherwise the two pass-through dims
// rotary_dim + 2 (j - rotary_dim / 2) and the next. q's resulting values go to
// q_out(dim, value, rotated), rounded to BF16 as stored; k's (rotated) values and v's dims
// 2j, 2j + 1 are stored into kc / vc (this head's cache row) when those are not null. T: the
// cache element (kv_elem.cuh; FP8 encodes the F32 value directly, one rounding).
template <typename T, typename QOut>
__device__ __forceinline__ void rotary_pair(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                            const __nv_bfloat16* v, T* kc, T* vc, int j,
                                            int rotary_dim, int head_dim, int pos, float theta,
                                            float k_scale, float v_scale, QOut q_out) {
  using E = KvElem<T>;
  const int half = rotary_dim / 2;
  if (j < half) {
    const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * j) / rotary_dim);
    float s, c;
    sincosf(static_cast<float>(pos) * inv_freq, &s, &c);
    const float q1 = __bfloat162float(q[j]), q2 = __bfloat162float(q[j + half]);
    q_out(j, __float2bfloat16(q1 * c - q2 * s), true);
    q_out(j + half, __float2bfloat16(q2 * c + q1 * s), true);
    if (kc != nullptr) {
      const float k1 = __bfloat162float(k[j]), k2 = __bfloat162float(k[j + half]);
      kc[j] = E::FromFloat(k1 * c - k2 * s, k_scale);
      kc[j + half] = E::FromFloat(k2 * c + k1 * s, k_scale);
    }
  } else {
    const int d = rotary_dim + 2 * (j - half);  // the pass-through dims, two per pair
    q_out(d, q[d], false);
    if (d + 1 < head_dim) q_out(d + 1, q[d + 1], false);
    if (kc != nullptr) {
      if constexpr (E::kFp8) {
        kc[d] = E::FromFloat(__bfloat162float(k[d]), k_scale);
        if (d + 1 < head_dim) kc[d + 1] = E::FromFloat(__bfloat162float(k[d + 1]), k_scale);
      } else {
        kc[d] = k[d];
        if (d + 1 < head_dim) kc[d + 1] = k[d + 1];
      }
    }
  }
  if (vc != nullptr) {
    if constexpr (E::kFp8) {
      vc[2 * j] = E::FromFloat(__bfloat162float(v[2 * j]), v_scale);
      vc[2 * j + 1] = E::FromFloat(__bfloat162float(v[2 * j + 1]), v_scale);
    } else {
      vc[2 * j] = v[2 * j];
      vc[2 * j + 1] = v[2 * j + 1];
    }
  }
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_ROTARY_PAIR_CUH_
