// Run-time CPU feature checks that pick the kernels.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_

namespace phi::cpu {

// AVX-512 F/BW/VL/DQ and OS support for ZMM state (the F32-FMA GEMM kernels, which also
// widen BF16 weights with AVX-512BW shuffles).
bool CpuHasAvx512F();

}  // namespace phi::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_
