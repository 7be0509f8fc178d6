#include "services/worker/backends/cpu/cpu_features.h"

namespace phi::cpu {

// __builtin_cpu_supports consults CPUID and XCR0 (OS-enabled ZMM state) via libgcc.
bool CpuHasAvx512F() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

}  // namespace phi::cpu
