// The rendezvous store in one process: KvStore semantics and the gRPC service + client.
#include <chrono>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/parallel/kv_client.h"
#include "services/worker/parallel/kv_store.h"
#include "services/worker/parallel/local_communicator.h"
#include "services/worker/parallel/rendezvous_server.h"
#include "services/worker/parallel/worker_group.h"

namespace phi::worker::parallel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

TEST(KvStoreTest, WaitReturnsMissingKeysAfterTimeout) {
  KvStore store;
  store.Set("a", "1");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THAT(store.Wait({"a", "b", "c"}, 100ms), ElementsAre("b", "c"));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
}

TEST(KvStoreTest, WaitWakesOnSet) {
  KvStore store;
  std::thread setter([&] {
    std::this_thread::sleep_for(50ms);
    store.Set("k", "v");
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(store.Wait({"k"}, 10s).empty());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  setter.join();
  EXPECT_EQ(store.Get("k"), "v");
  EXPECT_EQ(store.Get("x"), std::nullopt);
}

TEST(KvStoreTest, ListByPrefixSorted) {
  KvStore store;
  store.Set("g/2", "");
  store.Set("g/0", "");
  store.Set("h/0", "");
  store.Set("g", "");
  EXPECT_THAT(store.List("g/"), ElementsAre("g/0", "g/2"));
}

TEST(KvStoreTest, ShutdownWakesWaiters) {
  KvStore store;
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    store.Shutdown();
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THAT(store.Wait({"never"}, 30s), ElementsAre("never"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  stopper.join();
}

TEST(RendezvousServiceTest, SetGetWaitListOverGrpc) {
  auto server = RendezvousServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  KvClient client("127.0.0.1:" + std::to_string((*server)->port()), 5s);
  ASSERT_TRUE(client.Set("nccl/unique_id", std::string("\0\1\2", 3)).ok());
  auto value = client.Get("nccl/unique_id");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, std::string("\0\1\2", 3));
  auto missing = client.Get("absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("absent"));

  std::thread setter([&] {
    std::this_thread::sleep_for(100ms);
    KvClient other("127.0.0.1:" + std::to_string((*server)->port()), 5s);
    EXPECT_TRUE(other.Set("late", "x").ok());
  });
  auto waited = client.Wait({"nccl/unique_id", "late"}, 5s);
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_TRUE(waited->empty());
  setter.join();
  auto timed_out = client.Wait({"late", "never"}, 100ms);
  ASSERT_TRUE(timed_out.ok());
  EXPECT_THAT(*timed_out, ElementsAre("never"));
  auto listed = client.List("");
  ASSERT_TRUE(listed.ok());
  EXPECT_THAT(*listed, ElementsAre("late", "nccl/unique_id"));
  EXPECT_EQ(client.Set("", "x").code(), absl::StatusCode::kInvalidArgument);
}

TEST(RendezvousServiceTest, UnreachableLeaderFailsWithinTheTimeout) {
  // Nothing listens on port 1.
  KvClient client("127.0.0.1:1", 300ms);
  const auto t0 = std::chrono::steady_clock::now();
  auto status = client.Set("k", "v");
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("127.0.0.1:1"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

TEST(WorkerGroupTest, LeaderAddressValidated) {
  EXPECT_TRUE(ValidateLeaderAddress("phi-worker-0.phi-worker:29500").ok());
  EXPECT_TRUE(ValidateLeaderAddress("[::1]:29500").ok());
  for (const char* bad : {"host", ":29500", "host:", "host:0", "host:70000", "host:x"}) {
    auto s = ValidateLeaderAddress(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("--leader")) << bad;
  }
}

TEST(WorkerGroupTest, GroupOfOneNeedsNoLeader) {
  GroupOptions options;
  options.leader = "unused";
  auto group = WorkerGroup::Join(options);
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_TRUE((*group)->is_leader());
  EXPECT_EQ((*group)->host().name(), "local");
  std::vector<float> v = {1.5f, -2.0f};
  EXPECT_TRUE((*group)->host().AllReduceSum(v).ok());
  EXPECT_EQ(v[0], 1.5f);
  float out[2];
  EXPECT_TRUE((*group)->host().AllGather(v.data(), out, sizeof(out)).ok());
  EXPECT_EQ(out[1], -2.0f);
}

TEST(WorkerGroupTest, BadRankAndWorldSizeRefused) {
  GroupOptions options;
  options.world_size = 0;
  EXPECT_THAT(WorkerGroup::Join(options).status().message(), HasSubstr("--world-size"));
  options.world_size = 2;
  options.rank = -1;
  EXPECT_THAT(WorkerGroup::Join(options).status().message(), HasSubstr("--rank"));
}

}  // namespace
}  // namespace phi::worker::parallel
