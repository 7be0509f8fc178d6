// The instruction sets the CPU kernels are written for, and which of them this host runs.
//
// Every kernel family (GEMM, attention, LayerNorm, gelu_new) has one implementation per
// Isa; the runner picks one Isa at load (the best the host has, or the one asked for) and
// uses it for every step, so a host computes each output with one fixed operation order.
// The AVX2 and AVX-512 GEMM and attention kernels use the same FMA order per output, so
// they agree bit for bit; the portable kernels (plain C++, no FMA contraction) are the
// reference the SIMD kernels are tested against within a stated bound. kAvx512Bf16 is
// kAvx512 except for GEMMs over BF16 weights, which round the activations to BF16 and use
// vdpbf16ps (a contract of its own, matmul_kernels.h).
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_

#include <string_view>

#include "absl/status/statusor.h"

namespace phi::worker::cpu {

enum class Isa {
  kPortable,  // plain C++; any CPU
  kAvx2,      // AVX2 + FMA + F16C (x86-64-v3: Haswell and later, AMD Zen)
  kAvx512,    // AVX-512 F/BW/VL/DQ (Skylake-SP and later, AMD Zen 4)
  // kAvx512 + AVX512_BF16 (Cooper Lake, Sapphire Rapids and later, AMD Zen 4): BF16-weight
  // GEMMs use vdpbf16ps on BF16-rounded activations; every other kernel is kAvx512's.
  kAvx512Bf16,
};

// What the operator asks for: the best the host has, or one Isa (tests, benches, A/B).
enum class KernelPath { kAuto, kAvx512Bf16, kAvx512, kAvx2, kPortable };

// AVX-512 F/BW/VL/DQ and OS support for ZMM state.
bool CpuHasAvx512F();
// CpuHasAvx512F() and AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16).
bool CpuHasAvx512Bf16();
// AVX2, FMA and F16C and OS support for YMM state.
bool CpuHasAvx2Fma();
bool CpuSupports(Isa isa);
// What `auto` picks: the first Isa of kAutoPreference (cpu_features.cc) the host runs.
Isa BestIsa();

// "avx512bf16", "avx512", "avx2", "portable": the names of --cpu-kernels and of the metric
// label.
std::string_view IsaName(Isa isa);
// "auto" or an IsaName; false for anything else.
bool ParseKernelPath(std::string_view name, KernelPath* out);
// kAuto: BestIsa(). A named Isa the host lacks: FailedPrecondition naming it and what the
// host has.
absl::StatusOr<Isa> ResolveKernelPath(KernelPath path);

}  // namespace phi::worker::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_FEATURES_H_
