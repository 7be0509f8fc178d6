#include "services/worker/backends/cpu/cpu_features.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace phi::cpu {

// __builtin_cpu_supports consults CPUID and XCR0 (OS-enabled YMM/ZMM state) via libgcc.
bool CpuHasAvx512F() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool CpuHasAvx512Bf16() {
#if defined(__x86_64__)
  return CpuHasAvx512F() && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool CpuHasAvx2Fma() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool CpuSupports(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Bf16: return CpuHasAvx512Bf16();
    case Isa::kAvx512: return CpuHasAvx512F();
    case Isa::kAvx2: return CpuHasAvx2Fma();
    case Isa::kPortable: return true;
  }
  return false;
}

namespace {

// `auto`'s order of preference, the one place to change it. kAvx512Bf16 is not in it yet:
// its BF16 GEMMs round the activations (a different contract from kAvx512's), and whether
// it is the faster path depends on the host's vdpbf16ps rate (Sapphire Rapids KVM: half
// the F32 FMA FLOPs; Zen 4: see bench/results/cpu_backend.md). To make it the default,
// put it first.
constexpr Isa kAutoPreference[] = {Isa::kAvx512, Isa::kAvx2, Isa::kPortable};

}  // namespace

Isa BestIsa() {
  for (Isa isa : kAutoPreference) {
    if (CpuSupports(isa)) return isa;
  }
  return Isa::kPortable;
}

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kPortable: return "portable";
  }
  return "?";
}

bool ParseKernelPath(std::string_view name, KernelPath* out) {
  if (name == "auto") *out = KernelPath::kAuto;
  else if (name == "avx512bf16") *out = KernelPath::kAvx512Bf16;
  else if (name == "avx512") *out = KernelPath::kAvx512;
  else if (name == "avx2") *out = KernelPath::kAvx2;
  else if (name == "portable") *out = KernelPath::kPortable;
  else return false;
  return true;
}

absl::StatusOr<Isa> ResolveKernelPath(KernelPath path) {
  Isa isa = Isa::kPortable;
  switch (path) {
    case KernelPath::kAuto: return BestIsa();
    case KernelPath::kAvx512Bf16: isa = Isa::kAvx512Bf16; break;
    case KernelPath::kAvx512: isa = Isa::kAvx512; break;
    case KernelPath::kAvx2: isa = Isa::kAvx2; break;
    case KernelPath::kPortable: return Isa::kPortable;
  }
  if (!CpuSupports(isa)) {
    return absl::FailedPreconditionError(absl::StrCat("CPU kernels ", std::string(IsaName(isa)),
                                                      ": this CPU lacks them (it runs ",
                                                      std::string(IsaName(BestIsa())), ")"));
  }
  return isa;
}

}  // namespace phi::cpu
