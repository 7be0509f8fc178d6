// LoRA adapters in a tensor-parallel group, ranks as threads: LeaderRunner::SetAdapter makes
// every follower read the adapter itself and install it in the same slot; a rank that cannot
// read it fails the leader's call with its status, leaves the slot empty on every rank and
// the group serving; slots outside the leader's range are refused before anything is sent.
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/parallel/follower.h"
#include "services/worker/parallel/leader_runner.h"
#include "tests/unit/worker/parallel/thread_communicator.h"

namespace phi::worker::parallel {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::ThreadCommunicator;
using testing::ThreadGroup;

// A shard that only keeps its slots: slot -> adapter name ("" empty), and every call.
class SlotShard final : public worker::ModelRunner {
 public:
  explicit SlotShard(int32_t slots) : slots_(slots) {}
  const worker::ModelShape& shape() const override { return shape_; }
  absl::Status AllocateKvCache(const worker::KvCacheSpec&) override { return absl::OkStatus(); }
  int64_t KvBlockBytes(int32_t) const override { return 1; }
  absl::Status Step(const worker::StepBatch&, worker::StepLogits*) override { return absl::OkStatus(); }
  int32_t max_adapter_slots() const override { return slots_; }
  absl::Status SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::to_string(slot) + ":" + (adapter ? adapter->name : "-"));
    if (slot < 1 || slot > slots_) return absl::InvalidArgumentError("slot " + std::to_string(slot) + " out of range");
    installed_[slot] = adapter ? adapter->name : "";
    return absl::OkStatus();
  }
  std::string In(int32_t slot) {
    std::lock_guard<std::mutex> lock(mu_);
    return installed_[slot];
  }
  std::vector<std::string> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  int32_t slots_;
  worker::ModelShape shape_;
  std::mutex mu_;
  std::map<int32_t, std::string> installed_;
  std::vector<std::string> calls_;
};

std::shared_ptr<const lora::LoraAdapter> Adapter(const std::string& name) {
  auto a = std::make_shared<lora::LoraAdapter>();
  a->name = name;
  a->path = "/adapters/" + name;
  return a;
}

// A group of `n` threads: rank 0 a LeaderRunner the test drives, the others RunFollower
// with a loader that makes an adapter from the folder's last part, or fails where the
// test says (rank -> status).
class Group {
 public:
  Group(int n, std::vector<int32_t> slots, std::map<int, absl::Status> load_fails = {}, bool loaders = true)
      : threads_(n), stats_(static_cast<size_t>(n)) {
    for (int r = 0; r < n; ++r) {
      comms_.push_back(std::make_unique<ThreadCommunicator>(&threads_, r));
      shards_.push_back(std::make_unique<SlotShard>(slots[static_cast<size_t>(r)]));
    }
    for (int r = 1; r < n; ++r) {
      AdapterLoader loader;
      if (loaders) {
        loader = [this, r, fail = load_fails[r]](const std::string& name, const std::string& path)
            -> absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>> {
          {
            std::lock_guard<std::mutex> lock(mu_);
            loads_.push_back(std::to_string(r) + ":" + name + "@" + path);
          }
          if (!fail.ok()) return fail;
          return Adapter(name);
        };
      }
      followers_.emplace_back([this, r, loader = std::move(loader)] {
        follower_status_[r] = RunFollower(shards_[r].get(), comms_[r].get(), &stats_[r], nullptr, loader);
      });
    }
    LeaderOptions options;
    options.on_failure = [this](const absl::Status&) { ++failures_; };
    leader_ = std::make_unique<LeaderRunner>(shards_[0].get(), comms_[0].get(), options);
  }
  ~Group() { Stop(); }
  void Stop() {
    if (leader_) leader_->Shutdown();
    for (auto& t : followers_) t.join();
    followers_.clear();
  }
  LeaderRunner& leader() { return *leader_; }
  SlotShard& shard(int r) { return *shards_[static_cast<size_t>(r)]; }
  absl::Status follower_status(int r) { return follower_status_[r]; }
  uint64_t adapters_set(int r) { return stats_[static_cast<size_t>(r)].adapters_set.load(); }
  int failures() const { return failures_; }
  std::vector<std::string> loads() {
    std::lock_guard<std::mutex> lock(mu_);
    return loads_;
  }

 private:
  ThreadGroup threads_;
  std::vector<std::unique_ptr<ThreadCommunicator>> comms_;
  std::vector<std::unique_ptr<SlotShard>> shards_;
  std::vector<FollowerStats> stats_;
  std::map<int, absl::Status> follower_status_;
  std::vector<std::thread> followers_;
  std::unique_ptr<LeaderRunner> leader_;
  std::atomic<int> failures_{0};
  std::mutex mu_;
  std::vector<std::string> loads_;
};

TEST(AdapterInstallTest, EveryRankReadsAndInstallsTheAdapter) {
  Group g(3, {4, 4, 4});
  EXPECT_EQ(g.leader().max_adapter_slots(), 4);
  ASSERT_TRUE(g.leader().SetAdapter(2, Adapter("dpo")).ok());
  ASSERT_TRUE(g.leader().SetAdapter(4, Adapter("sql")).ok());
  ASSERT_TRUE(g.leader().SetAdapter(2, nullptr).ok());
  g.Stop();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(g.shard(r).In(2), "") << r;
    EXPECT_EQ(g.shard(r).In(4), "sql") << r;
    EXPECT_THAT(g.shard(r).calls(), ::testing::ElementsAre("2:dpo", "4:sql", "2:-")) << r;
    if (r > 0) {
      EXPECT_TRUE(g.follower_status(r).ok()) << g.follower_status(r);
      EXPECT_EQ(g.adapters_set(r), 3u);
    }
  }
  // Followers read the folder themselves; a clear reads nothing.
  EXPECT_THAT(g.loads(), ::testing::UnorderedElementsAre("1:dpo@/adapters/dpo", "2:dpo@/adapters/dpo",
                                                         "1:sql@/adapters/sql", "2:sql@/adapters/sql"));
  EXPECT_EQ(g.failures(), 0);
}

TEST(AdapterInstallTest, FollowerFailureReachesTheLeaderAndTheGroupKeepsServing) {
  Group g(3, {4, 4, 4}, {{2, absl::NotFoundError("/adapters/new/adapter_config.json: no such file")}});
  absl::Status st = g.leader().SetAdapter(1, Adapter("new"));
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_THAT(std::string(st.message()), StartsWith("rank 2: "));
  EXPECT_THAT(std::string(st.message()), HasSubstr("adapter_config.json: no such file"));
  EXPECT_TRUE(g.leader().health().ok());
  worker::StepLogits logits;
  EXPECT_TRUE(g.leader().Step({}, &logits).ok());  // the group still runs steps
  EXPECT_TRUE(g.leader().SetAdapter(1, nullptr).ok());
  g.Stop();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(g.shard(r).In(1), "") << r;  // installed on ranks 0 and 1, then cleared
    if (r > 0) {
      EXPECT_TRUE(g.follower_status(r).ok()) << g.follower_status(r);
    }
  }
  EXPECT_THAT(g.shard(1).calls(), ::testing::ElementsAre("1:new", "1:-", "1:-"));
  EXPECT_THAT(g.shard(2).calls(), ::testing::ElementsAre("1:-", "1:-"));  // never got it
  EXPECT_EQ(g.failures(), 0);
}

TEST(AdapterInstallTest, AFollowerWithFewerSlotsFailsTheCall) {
  Group g(2, {4, 2});
  absl::Status st = g.leader().SetAdapter(3, Adapter("a"));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("rank 1: slot 3 out of range"));
  EXPECT_TRUE(g.leader().SetAdapter(2, Adapter("b")).ok());
  g.Stop();
  EXPECT_EQ(g.shard(0).In(3), "");
  EXPECT_EQ(g.shard(0).In(2), "b");
  EXPECT_EQ(g.shard(1).In(2), "b");
}

TEST(AdapterInstallTest, AFollowerWithoutALoaderFailsTheCall) {
  Group g(2, {4, 4}, {}, /*loaders=*/false);
  absl::Status st = g.leader().SetAdapter(1, Adapter("a"));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("rank 1: "));
  EXPECT_TRUE(g.leader().SetAdapter(1, nullptr).ok());  // clearing reads nothing
  g.Stop();
  EXPECT_EQ(g.shard(0).In(1), "");
}

TEST(AdapterInstallTest, SlotsOutsideTheRangeAreRefusedBeforeBroadcast) {
  Group g(2, {4, 4});
  for (int32_t slot : {0, 5, -1}) {
    absl::Status st = g.leader().SetAdapter(slot, Adapter("a"));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("outside [1, 4]"));
  }
  auto pathless = std::make_shared<lora::LoraAdapter>();
  pathless->name = "mem";
  EXPECT_THAT(std::string(g.leader().SetAdapter(1, pathless).message()), HasSubstr("no folder"));
  g.Stop();
  EXPECT_EQ(g.adapters_set(1), 0u);
  EXPECT_TRUE(g.shard(1).calls().empty());
  EXPECT_TRUE(g.shard(0).calls().empty());
}

TEST(AdapterInstallTest, AGroupOfOnePassesStraightThrough) {
  ThreadGroup threads(1);
  ThreadCommunicator comm(&threads, 0);
  SlotShard shard(2);
  LeaderRunner leader(&shard, &comm, {});
  EXPECT_EQ(leader.max_adapter_slots(), 2);
  EXPECT_TRUE(leader.SetAdapter(1, Adapter("a")).ok());
  EXPECT_EQ(shard.In(1), "a");
  EXPECT_EQ(leader.SetAdapter(3, Adapter("b")).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace phi::worker::parallel
