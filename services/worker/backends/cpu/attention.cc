// Dispatch and the portable kernel (CPUs without AVX-512; tests compare the two).
#include "services/worker/backends/cpu/attention.h"

#include <algorithm>
#include <cmath>

namespace phi::worker::cpu {

void AttendCausal(const AttentionArgs& a, Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
    case Isa::kAvx512Bf16:  // AVX-512's (vdpbf16ps is for BF16-weight GEMMs only)
      kernels::attend_causal_avx512(a);
      break;
    case Isa::kAvx2: kernels::attend_causal_avx2(a); break;
    case Isa::kPortable: kernels::attend_causal_portable(a); break;
  }
}

namespace kernels {

void attend_causal_portable(const AttentionArgs& a) {
  const int64_t bs = a.block_size, hd = a.head_dim;
  float* s = a.scores;
  for (int64_t i = 0; i < a.nq; ++i) {
    const float* q = a.q + i * a.q_stride;
    const int64_t ctx = a.ctx0 + i;
    float mx = -3.402823466e38f;
    for (int64_t j = 0; j < ctx; ++j) {
      const float* kt = a.k_blocks[j / bs] + j % bs;
      float acc = 0.0f;
      for (int64_t d = 0; d < hd; ++d) acc += q[d] * kt[d * bs];
      s[j] = acc / a.scale_div;
      mx = std::max(mx, s[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < ctx; ++j) sum += (s[j] = std::exp(s[j] - mx));
    const float inv = 1.0f / sum;
    float* out = a.out + i * a.out_stride;
    std::fill(out, out + hd, 0.0f);
    for (int64_t j = 0; j < ctx; ++j) {
      const float p = s[j] * inv;
      const float* v = a.v_blocks[j / bs] + (j % bs) * hd;
      for (int64_t d = 0; d < hd; ++d) out[d] += p * v[d];
    }
  }
}

}  // namespace kernels
}  // namespace phi::worker::cpu
