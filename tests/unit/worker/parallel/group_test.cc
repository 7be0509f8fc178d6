// Worker groups as separate processes on loopback (parallel_group_rank, one per rank):
// exact collectives for N = 2 and 4, the rendezvous timeout naming the missing rank, and
// a killed or stalled peer failing the others within 5 s instead of hanging.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/worker/parallel/rank_processes.h"

namespace phi::worker::parallel::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string LogDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/phi_parallel_" + name + "_" + std::to_string(getpid());
  mkdir(dir.c_str(), 0755);
  return dir;
}

std::string Leader() { return "127.0.0.1:" + std::to_string(FreePort()); }

// "FAILED_AFTER_MS <ms> ..." from a loop-mode log; -1 when absent.
long FailedAfterMs(const std::string& log) {
  auto at = log.find("FAILED_AFTER_MS ");
  if (at == std::string::npos) return -1;
  return std::strtol(log.c_str() + at + 16, nullptr, 10);
}

class CollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(CollectivesTest, ExactOnSeededData) {
  const int n = GetParam();
  RankGroup group(PHI_GROUP_RANK_BINARY, LogDir("collectives" + std::to_string(n)));
  const std::string leader = Leader();
  for (int r = 0; r < n; ++r) group.Start(r, {"collectives", std::to_string(r), std::to_string(n), leader, "20000"});
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(60))) << "a rank hung";
  for (auto& p : group.ranks()) {
    EXPECT_EQ(p.exit_code, 0) << "rank " << p.rank << ":\n" << p.Log();
    EXPECT_THAT(p.Log(), HasSubstr("collectives exact"));
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CollectivesTest, ::testing::Values(2, 4));

TEST(RendezvousTimeoutTest, NamesTheMissingRank) {
  RankGroup group(PHI_GROUP_RANK_BINARY, LogDir("missing"));
  const std::string leader = Leader();
  // Rank 1 of 3 never starts.
  group.Start(0, {"join", "0", "3", leader, "1500"});
  group.Start(2, {"join", "2", "3", leader, "1500"});
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(20)));
  for (auto& p : group.ranks()) {
    EXPECT_EQ(p.exit_code, 3) << p.Log();
    EXPECT_THAT(p.Log(), HasSubstr("rank(s) 1 of 3 did not arrive")) << "rank " << p.rank;
    EXPECT_LT(p.exit_after_s, 10.0) << "rank " << p.rank << " waited far past the 1.5 s join timeout";
  }
}

TEST(RendezvousTimeoutTest, LeaderThatNeverStartsIsNamed) {
  RankGroup group(PHI_GROUP_RANK_BINARY, LogDir("noleader"));
  const std::string leader = Leader();
  group.Start(1, {"join", "1", "2", leader, "1000"});
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(20)));
  auto& p = group.rank(1);
  EXPECT_EQ(p.exit_code, 3) << p.Log();
  EXPECT_THAT(p.Log(), HasSubstr(leader));
  EXPECT_LT(p.exit_after_s, 10.0);
}

TEST(RendezvousTimeoutTest, RankOutsideWorldIsRefused) {
  RankGroup group(PHI_GROUP_RANK_BINARY, LogDir("badrank"));
  group.Start(2, {"join", "2", "2", Leader(), "1000"});
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(20)));
  EXPECT_EQ(group.rank(2).exit_code, 3);
  EXPECT_THAT(group.rank(2).Log(), HasSubstr("--rank: 2, allowed 0 .. 1"));
}

class DeadPeerTest : public ::testing::TestWithParam<int> {};

TEST_P(DeadPeerTest, KilledPeerFailsOthersWithin5s) {
  const int n = GetParam();
  RankGroup group(PHI_GROUP_RANK_BINARY, LogDir("kill" + std::to_string(n)));
  const std::string leader = Leader();
  // The op timeout is far above 5 s: the failure must come from the closed sockets.
  for (int r = 0; r < n; ++r) {
    group.Start(r, {r == n - 1 ? "die" : "loop", std::to_string(r), std::to_string(n), leader, "20000", "30000"});
  }
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(30))) << "survivors hung after a peer was killed";
  EXPECT_EQ(group.rank(n - 1).exit_code, 128 + SIGKILL);
  for (int r = 0; r < n - 1; ++r) {
    auto& p = group.rank(r);
    const std::string log = p.Log();
    EXPECT_EQ(p.exit_code, 4) << "rank " << r << ":\n" << log;
    const long ms = FailedAfterMs(log);
    EXPECT_GE(ms, 0) << log;
    EXPECT_LT(ms, 5000) << log;
    EXPECT_THAT(log, HasSubstr("UNAVAILABLE")) << log;
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, DeadPeerTest, ::testing::Values(2, 4));

TEST(StalledPeerTest, StalledPeerTimesOutWithin5s) {
  RankGroup group(PHI_GROUP_RANK_BINARY, LogDir("stall"));
  const std::string leader = Leader();
  group.Start(0, {"loop", "0", "2", leader, "20000", "1500"});
  group.Start(1, {"stall", "1", "2", leader, "20000", "1500"});
  ASSERT_TRUE(group.Wait(group.rank(0), std::chrono::seconds(30))) << "rank 0 hung on a stalled peer";
  auto& p = group.rank(0);
  const std::string log = p.Log();
  EXPECT_EQ(p.exit_code, 4) << log;
  const long ms = FailedAfterMs(log);
  EXPECT_GE(ms, 1000) << "failed before the op timeout: " << log;
  EXPECT_LT(ms, 5000) << log;
  EXPECT_THAT(log, Not(HasSubstr("collectives exact")));
  // ~RankGroup kills the stopped rank 1.
}

}  // namespace
}  // namespace phi::worker::parallel::testing
