#include "services/worker/backends/cpu/cpu_features.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace phi::worker::cpu {

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

// `auto`'s order of preference after the one vendor rule in BestIsa.
constexpr Isa kAutoPreference[] = {Isa::kAvx512, Isa::kAvx2, Isa::kPortable};

}  // namespace

Isa BestIsa() {
  // kAvx512Bf16 rounds the BF16 GEMMs' activations (a different contract from kAvx512's)
  // and pays only where vdpbf16ps outruns F32 FMAs: twice their FLOPs on AMD Zen 4
  // (212 vs 104 GFLOP/s per core, 512-token prefill 158 vs 82 tok/s), half on Intel
  // Sapphire Rapids (82 vs 165; bench/results/cpu_backend.md). Chosen
  // by vendor, not by a timing at start-up, so a host always computes with the same path.
  if (CpuSupports(Isa::kAvx512Bf16) && __builtin_cpu_is("amd")) return Isa::kAvx512Bf16;
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

}  // namespace phi::worker::cpu
