#include "tests/unit/worker/parallel/rank_processes.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace phi::worker::parallel::testing {

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string RankProcess::Log() const {
  std::ifstream in(log_path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void RankGroup::Start(int rank, const std::vector<std::string>& args) {
  RankProcess p;
  p.rank = rank;
  p.log_path = log_dir_ + "/rank" + std::to_string(rank) + ".log";
  std::vector<std::string> argv_s = {binary_};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, p.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  if (posix_spawn(&p.pid, binary_.c_str(), &actions, nullptr, argv.data(), environ) != 0) p.pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  ranks_.push_back(p);
}

RankProcess& RankGroup::rank(int r) {
  for (auto& p : ranks_) {
    if (p.rank == r) return p;
  }
  throw std::out_of_range("no such rank");
}

bool RankGroup::Wait(RankProcess& p, std::chrono::milliseconds timeout) {
  if (p.pid <= 0) return p.exit_code >= 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(p.pid, &status, WNOHANG);
    if (r == p.pid) {
      p.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      p.exit_after_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      p.pid = -1;
      return true;
    }
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool RankGroup::WaitAll(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool all = true;
  for (auto& p : ranks_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (!Wait(p, std::max(left, std::chrono::milliseconds(1)))) all = false;
  }
  if (!all) {
    for (auto& p : ranks_) {
      if (p.pid > 0) {
        kill(p.pid, SIGKILL);
        Wait(p, std::chrono::seconds(5));
      }
    }
  }
  return all;
}

RankGroup::~RankGroup() {
  for (auto& p : ranks_) {
    if (p.pid > 0) {
      kill(p.pid, SIGKILL);
      int status = 0;
      waitpid(p.pid, &status, 0);
    }
  }
}

}  // namespace phi::worker::parallel::testing
