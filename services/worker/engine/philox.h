// Counter-based random numbers for sampling: Philox4x32-10.
// ref: Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11.
// A request's draw for its k-th generated token is philox(key = seed, counter = k): it depends
// on nothing else in the batch and survives preemption (recompute draws the same number).
// The engine draws on the host for every backend (backends return logits or candidates), so
// this is the project's one Philox.
#ifndef PHI_SERVICES_WORKER_ENGINE_PHILOX_H_
#define PHI_SERVICES_WORKER_ENGINE_PHILOX_H_

#include <array>
#include <cstdint>

namespace phi::worker {

inline std::array<uint32_t, 4> Philox4x32x10(uint64_t key, uint64_t counter) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  uint32_t x0 = static_cast<uint32_t>(counter), x1 = static_cast<uint32_t>(counter >> 32);
  uint32_t x2 = 0, x3 = 0;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * x0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * x2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t y0 = hi1 ^ x1 ^ k0, y2 = hi0 ^ x3 ^ k1;
    x0 = y0;
    x1 = lo1;
    x2 = y2;
    x3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {x0, x1, x2, x3};
}

// Uniform in [0, 1) with 24 random bits (exactly representable as float).
inline float PhiloxUniform(uint64_t seed, uint64_t counter) {
  return static_cast<float>(Philox4x32x10(seed, counter)[0] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_PHILOX_H_
