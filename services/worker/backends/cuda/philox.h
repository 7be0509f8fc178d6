// Philox4x32-10 counter-based generator (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11), shared by the GPU sampler and its CPU twin so both draw the same numbers.
// Keyed by the request's seed, counted by the token's step: the draw for a token depends on
// nothing else in the batch.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_PHILOX_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_PHILOX_H_

#include <cstdint>

#if defined(__CUDACC__)
#define PHI_HD __host__ __device__ __forceinline__
#else
#define PHI_HD inline
#endif

namespace phi::worker::cuda {

struct Philox4 {
  uint32_t v[4];
};

PHI_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// The full generator: 128-bit counter, 64-bit key (Random123's philox4x32_10).
PHI_HD Philox4 philox4x32_10_block(Philox4 ctr, uint32_t k0, uint32_t k1) {
  uint32_t c0 = ctr.v[0], c1 = ctr.v[1], c2 = ctr.v[2], c3 = ctr.v[3];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Key = the request's seed, counter = (step, 0).
PHI_HD Philox4 philox4x32_10(uint64_t key64, uint64_t counter64) {
  return philox4x32_10_block(
      Philox4{{static_cast<uint32_t>(counter64), static_cast<uint32_t>(counter64 >> 32), 0, 0}},
      static_cast<uint32_t>(key64), static_cast<uint32_t>(key64 >> 32));
}

// Uniform in [0, 1) with 24 random bits: the draw for token `step` of a request seeded `seed`.
PHI_HD float philox_uniform(uint64_t seed, uint64_t step) {
  const Philox4 r = philox4x32_10(seed, step);
  return static_cast<float>(r.v[0] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_PHILOX_H_
