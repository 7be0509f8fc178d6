// One rank of a test worker group, started as a separate process by group_test.cc:
//   parallel_group_rank MODE RANK WORLD_SIZE LEADER [JOIN_TIMEOUT_MS] [OP_TIMEOUT_MS]
// Modes:
//   collectives  all-reduce / broadcast / all-gather / barrier on seeded random data,
//                checked exactly against what every rank can compute for all ranks
//   join         only form the group (rendezvous timeout tests)
//   loop         all-reduce in a loop until a collective fails (a peer was killed)
//   die          like loop, but SIGKILLs itself after 20 rounds
//   stall        like loop, but SIGSTOPs itself after 20 rounds (the test kills it later)
// Exit codes: 0 ok, 1 wrong result or bad usage, 3 join failed, 4 a collective failed
// (expected in loop mode); stderr says why, and loop mode prints how long the failure
// took after the last collective that succeeded: "FAILED_AFTER_MS <ms> <status>".
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "services/worker/parallel/worker_group.h"

namespace {

using phi::worker::parallel::Communicator;

// Integer-valued floats: sums are exact in any order, so results compare with ==.
std::vector<float> RankData(uint64_t seed, int rank, size_t n) {
  std::mt19937_64 rng(seed * 1000003 + rank);
  std::uniform_int_distribution<int> dist(-1000, 1000);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(dist(rng));
  return v;
}

std::vector<uint8_t> RankBytes(uint64_t seed, int rank, size_t n) {
  std::mt19937_64 rng(seed * 7919 + rank + 17);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "rank check failed: %s\n", what.c_str());
  return 1;
}

int Collectives(Communicator& comm) {
  const int n = comm.world_size();
  // Odd sizes, one element, and more than Gloo's 1 MiB segment.
  for (size_t count : {size_t{1}, size_t{7}, size_t{2048}, size_t{333333}}) {
    for (uint64_t seed : {1u, 2u}) {
      auto data = RankData(seed, comm.rank(), count);
      std::vector<float> expected(count, 0.0f);
      for (int r = 0; r < n; ++r) {
        auto other = RankData(seed, r, count);
        for (size_t i = 0; i < count; ++i) expected[i] += other[i];
      }
      if (auto s = comm.AllReduceSum(data); !s.ok()) return Fail(s.ToString());
      for (size_t i = 0; i < count; ++i) {
        if (data[i] != expected[i]) {
          return Fail("all-reduce count " + std::to_string(count) + " index " + std::to_string(i) + ": " +
                      std::to_string(data[i]) + " != " + std::to_string(expected[i]));
        }
      }
    }
    for (int root = 0; root < n; ++root) {
      auto bytes = RankBytes(count, comm.rank(), count);
      if (auto s = comm.Broadcast(bytes.data(), bytes.size(), root); !s.ok()) return Fail(s.ToString());
      if (bytes != RankBytes(count, root, count)) return Fail("broadcast from root " + std::to_string(root));
    }
    auto mine = RankBytes(count + 5, comm.rank(), count);
    std::vector<uint8_t> all(count * n);
    if (auto s = comm.AllGather(mine.data(), all.data(), count); !s.ok()) return Fail(s.ToString());
    for (int r = 0; r < n; ++r) {
      auto theirs = RankBytes(count + 5, r, count);
      if (std::memcmp(all.data() + r * count, theirs.data(), count) != 0) {
        return Fail("all-gather slot of rank " + std::to_string(r) + ", count " + std::to_string(count));
      }
    }
    if (auto s = comm.Barrier(); !s.ok()) return Fail(s.ToString());
  }
  std::printf("rank %d of %d: collectives exact\n", comm.rank(), n);
  return 0;
}

int Loop(Communicator& comm, const std::string& mode) {
  std::vector<float> v(2048, 1.0f);
  auto last_ok = std::chrono::steady_clock::now();
  for (int round = 0;; ++round) {
    if (round == 20 && mode == "die") raise(SIGKILL);
    if (round == 20 && mode == "stall") raise(SIGSTOP);
    std::fill(v.begin(), v.end(), 1.0f);
    auto s = comm.AllReduceSum(v);
    const auto now = std::chrono::steady_clock::now();
    if (!s.ok()) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_ok).count();
      std::fprintf(stderr, "FAILED_AFTER_MS %lld %s\n", static_cast<long long>(ms), s.ToString().c_str());
      // A broken communicator keeps failing, fast.
      if (comm.Barrier().ok()) return Fail("barrier succeeded after a failure");
      return 4;
    }
    if (v[0] != static_cast<float>(comm.world_size())) return Fail("loop all-reduce value");
    last_ok = now;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (round > 100000) return Fail("no failure seen");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODE RANK WORLD_SIZE LEADER [JOIN_TIMEOUT_MS] [OP_TIMEOUT_MS]\n", argv[0]);
    return 1;
  }
  const std::string mode = argv[1];
  phi::worker::parallel::GroupOptions options;
  options.rank = std::atoi(argv[2]);
  options.world_size = std::atoi(argv[3]);
  options.leader = argv[4];
  if (argc > 5) options.join_timeout = std::chrono::milliseconds(std::atoi(argv[5]));
  if (argc > 6) options.op_timeout = std::chrono::milliseconds(std::atoi(argv[6]));
  auto group = phi::worker::parallel::WorkerGroup::Join(options);
  if (!group.ok()) {
    std::fprintf(stderr, "JOIN_FAILED %s\n", group.status().ToString().c_str());
    return 3;
  }
  if (mode == "join") return 0;
  if (mode == "collectives") return Collectives((*group)->host());
  if (mode == "loop" || mode == "die" || mode == "stall") return Loop((*group)->host(), mode);
  return Fail("unknown mode " + mode);
}
