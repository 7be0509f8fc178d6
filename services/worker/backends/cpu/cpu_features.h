// Run-time CPU feature checks that pick the kernels.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_

namespace phi::cpu {

// AVX-512 F/BW/VL with the BF16 dot product (vdpbf16ps), and OS support for ZMM state.
bool CpuHasAvx512Bf16();
// AVX-512 F (for the F32 kernels).
bool CpuHasAvx512F();

}  // namespace phi::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_
