// The walk over a run's queries in tiles of up to kAttentionQueryTile, each handed to the
// kernel's tile function with its size as a compile-time constant. Plain C++ (no
// intrinsics), shared by the SIMD attention files: each instantiates its own copy.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_ATTENTION_QUERY_TILES_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_ATTENTION_QUERY_TILES_H_

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "services/worker/backends/cpu/attention.h"

namespace phi::worker::cpu::kernels {
namespace {  // internal linkage: one private copy per translation unit and instruction set

// tile(std::integral_constant<int, QB>{}, i0) for the queries [i0, i0 + QB) of the run.
template <typename TileFn>
inline void ForEachQueryTile(const AttentionArgs& a, TileFn&& tile) {
  static_assert(kAttentionQueryTile == 8, "the switch below covers tiles of 1..8 queries");
  for (int64_t i0 = 0; i0 < a.nq; i0 += kAttentionQueryTile) {
    switch (std::min<int64_t>(kAttentionQueryTile, a.nq - i0)) {
      case 1: tile(std::integral_constant<int, 1>{}, i0); break;
      case 2: tile(std::integral_constant<int, 2>{}, i0); break;
      case 3: tile(std::integral_constant<int, 3>{}, i0); break;
      case 4: tile(std::integral_constant<int, 4>{}, i0); break;
      case 5: tile(std::integral_constant<int, 5>{}, i0); break;
      case 6: tile(std::integral_constant<int, 6>{}, i0); break;
      case 7: tile(std::integral_constant<int, 7>{}, i0); break;
      default: tile(std::integral_constant<int, 8>{}, i0); break;
    }
  }
}

}  // namespace
}  // namespace phi::worker::cpu::kernels

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_ATTENTION_QUERY_TILES_H_
