// The CPU's marketing name ("AMD EPYC", "Intel(R) Xeon(R) ..."), which every CPU benchmark
// table states with its numbers (header only, like bench_args.h).
#ifndef PHI_BENCH_COMMON_CPU_MODEL_NAME_H_
#define PHI_BENCH_COMMON_CPU_MODEL_NAME_H_

#include <cstdio>
#include <cstring>
#include <string>

namespace phi::bench {

// The first "model name" line of /proc/cpuinfo, or "unknown CPU".
inline std::string CpuModelName() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (f == nullptr) return "unknown CPU";
  char line[512];
  std::string name = "unknown CPU";
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "model name", 10) == 0) {
      const char* c = std::strchr(line, ':');
      if (c != nullptr) name = std::string(c + 2, std::strcspn(c + 2, "\n"));
      break;
    }
  }
  std::fclose(f);
  return name;
}

}  // namespace phi::bench

#endif  // PHI_BENCH_COMMON_CPU_MODEL_NAME_H_
