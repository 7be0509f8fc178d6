// Command-line flags of the benchmark programs (header only: the standalone GPU-machine build
// compiles the benchmarks without the project's libraries). `--name value` or `--name=value`.
#ifndef PHI_BENCH_COMMON_BENCH_ARGS_H_
#define PHI_BENCH_COMMON_BENCH_ARGS_H_

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace phi::bench {

inline std::string Flag(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--" + name && i + 1 < argc) return argv[i + 1];
    if (a.rfind("--" + name + "=", 0) == 0) return a.substr(name.size() + 3);
  }
  return def;
}

// An integer flag of at least `min`; anything else exits 2 naming the flag.
inline int IntFlag(int argc, char** argv, const std::string& name, int def, int min = INT_MIN) {
  int v = def;
  if (!absl::SimpleAtoi(Flag(argc, argv, name, std::to_string(def)), &v) || v < min) {
    if (min == INT_MIN) {
      std::fprintf(stderr, "--%s: not an integer\n", name.c_str());
    } else {
      std::fprintf(stderr, "--%s: expected an integer >= %d\n", name.c_str(), min);
    }
    std::exit(2);
  }
  return v;
}

// A comma-separated list of positive integers ("1,32,256"); other items are skipped.
inline std::vector<int> PositiveIntList(int argc, char** argv, const std::string& name,
                                        const std::string& def) {
  std::vector<int> out;
  for (absl::string_view s : absl::StrSplit(Flag(argc, argv, name, def), ',')) {
    int v = 0;
    if (absl::SimpleAtoi(s, &v) && v > 0) out.push_back(v);
  }
  return out;
}

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace phi::bench

#endif  // PHI_BENCH_COMMON_BENCH_ARGS_H_
