// Small helpers shared by the tensor-parallel benchmarks.
#ifndef PHI_BENCH_PARALLEL_BENCH_UTIL_H_
#define PHI_BENCH_PARALLEL_BENCH_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace phi::bench {

// A loopback port that was free a moment ago (for the group's rendezvous).
inline int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// "1,2,4" -> {1, 2, 4}; items that are not integers are skipped.
inline std::vector<int> ParseIntList(const char* s) {
  std::vector<int> out;
  for (auto part : absl::StrSplit(s, ',')) {
    int v = 0;
    if (absl::SimpleAtoi(part, &v)) out.push_back(v);
  }
  return out;
}

}  // namespace phi::bench

#endif  // PHI_BENCH_PARALLEL_BENCH_UTIL_H_
