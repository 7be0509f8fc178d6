// Test helper: starts the ranks of a worker group as separate processes on loopback and
// waits for them with a bound (a hung rank is killed and reported, never waited on forever).
#ifndef PHI_TESTS_UNIT_WORKER_PARALLEL_RANK_PROCESSES_H_
#define PHI_TESTS_UNIT_WORKER_PARALLEL_RANK_PROCESSES_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace phi::worker::parallel::testing {

// A free TCP port on 127.0.0.1 (bound, read, released).
int FreePort();

struct RankProcess {
  int rank = 0;
  pid_t pid = -1;
  std::string log_path;  // stdout + stderr
  int exit_code = -1;    // after Wait: exit status, or 128 + signal
  double exit_after_s = 0;  // seconds from Start to exit
  std::string Log() const;
};

class RankGroup {
 public:
  // argv of rank r is `binary` then args_for(r).
  RankGroup(std::string binary, std::string log_dir) : binary_(std::move(binary)), log_dir_(std::move(log_dir)) {}
  ~RankGroup();  // kills what still runs

  void Start(int rank, const std::vector<std::string>& args);
  // Waits for every rank to exit, at most `timeout`; returns false (and kills the rest)
  // when some did not.
  bool WaitAll(std::chrono::milliseconds timeout);
  // Waits for one rank.
  bool Wait(RankProcess& p, std::chrono::milliseconds timeout);
  std::vector<RankProcess>& ranks() { return ranks_; }
  RankProcess& rank(int r);

 private:
  std::string binary_;
  std::string log_dir_;
  std::vector<RankProcess> ranks_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace phi::worker::parallel::testing

#endif  // PHI_TESTS_UNIT_WORKER_PARALLEL_RANK_PROCESSES_H_
