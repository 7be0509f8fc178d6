// Step broadcast: the codec, and groups of N = 1, 2, 4 processes that replay the leader's
// steps on a sharded model — same logits (1e-5 relative) and greedy tokens as N = 1 — and
// that fail fast and non-zero when a follower or the leader dies mid-stream.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/parallel/step_codec.h"
#include "tests/unit/worker/parallel/rank_processes.h"

namespace phi::worker::parallel {
namespace {

using ::testing::HasSubstr;
using testing::FreePort;
using testing::RankGroup;

TEST(StepCodecTest, StepRoundTrips) {
  std::vector<int32_t> t1 = {5, 17, 33}, b1 = {4, 9}, t2 = {44}, b2 = {0, 1, 2, 3, 7};
  worker::StepBatch batch;
  batch.seqs.push_back({.seq_id = 1ull << 40, .tokens = t1, .start_pos = 0, .block_table = b1, .all_logits = true});
  batch.seqs.push_back({.seq_id = 2,
                         .tokens = t2,
                         .start_pos = 70,
                         .block_table = b2,
                         .all_logits = false,
                         .num_candidates = 41,
                         .sampling = {.temperature = 0.7f, .top_p = 0.9f, .top_k = 40, .min_p = 0.05f},
                         .logprobs = true,
                         .adapter_slot = 3});
  auto m = DecodeStepMessage(EncodeStep(41, batch));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->kind, StepKind::kStep);
  EXPECT_EQ(m->step_index, 41u);
  auto back = m->batch();
  ASSERT_EQ(back.seqs.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back.seqs[i].seq_id, batch.seqs[i].seq_id);
    EXPECT_EQ(back.seqs[i].start_pos, batch.seqs[i].start_pos);
    EXPECT_EQ(back.seqs[i].all_logits, batch.seqs[i].all_logits);
    EXPECT_EQ(back.seqs[i].adapter_slot, batch.seqs[i].adapter_slot);
    // Sampling options travel with candidate rows: every rank checks the candidates suffice.
    EXPECT_EQ(back.seqs[i].num_candidates, batch.seqs[i].num_candidates);
    EXPECT_EQ(back.seqs[i].sampling.temperature, batch.seqs[i].sampling.temperature);
    EXPECT_EQ(back.seqs[i].sampling.top_p, batch.seqs[i].sampling.top_p);
    EXPECT_EQ(back.seqs[i].sampling.top_k, batch.seqs[i].sampling.top_k);
    EXPECT_EQ(back.seqs[i].sampling.min_p, batch.seqs[i].sampling.min_p);
    EXPECT_EQ(back.seqs[i].logprobs, batch.seqs[i].logprobs);
    EXPECT_TRUE(std::equal(back.seqs[i].tokens.begin(), back.seqs[i].tokens.end(), batch.seqs[i].tokens.begin(),
                           batch.seqs[i].tokens.end()));
    EXPECT_TRUE(std::equal(back.seqs[i].block_table.begin(), back.seqs[i].block_table.end(),
                           batch.seqs[i].block_table.begin(), batch.seqs[i].block_table.end()));
  }
}

TEST(StepCodecTest, ControlMessagesRoundTrip) {
  auto kv = DecodeStepMessage(EncodeAllocateKv(0, {.num_blocks = 123, .block_size = 16}));
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->kind, StepKind::kAllocateKv);
  EXPECT_EQ(kv->kv.num_blocks, 123);
  EXPECT_EQ(kv->kv.block_size, 16);
  for (StepKind k : {StepKind::kHeartbeat, StepKind::kShutdown}) {
    auto m = DecodeStepMessage(EncodeControl(k, 7));
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->kind, k);
    EXPECT_EQ(m->step_index, 7u);
  }
}

TEST(StepCodecTest, SetAdapterRoundTrips) {
  const std::string path(4096, 'p');
  auto set = DecodeStepMessage(EncodeSetAdapter(9, 2, "dpo-v1.2", path));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->kind, StepKind::kSetAdapter);
  EXPECT_EQ(set->step_index, 9u);
  EXPECT_EQ(set->adapter_slot, 2);
  EXPECT_EQ(set->adapter_name, "dpo-v1.2");
  EXPECT_EQ(set->adapter_path, path);
  auto clear = DecodeStepMessage(EncodeSetAdapter(10, 4, "", ""));
  ASSERT_TRUE(clear.ok()) << clear.status();
  EXPECT_EQ(clear->adapter_slot, 4);
  EXPECT_TRUE(clear->adapter_name.empty());
  EXPECT_TRUE(clear->adapter_path.empty());
  EXPECT_STREQ(StepKindName(StepKind::kSetAdapter), "set-adapter");
}

TEST(StepCodecTest, TruncatedSetAdapterFailsByField) {
  const std::string good = EncodeSetAdapter(0, 1, "sql", "/adapters/sql");
  for (size_t n = 0; n < good.size(); ++n) {
    auto m = DecodeStepMessage(std::string_view(good).substr(0, n));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << n;
    EXPECT_THAT(m.status().message(), HasSubstr("offset")) << n;
  }
  EXPECT_THAT(DecodeStepMessage(std::string_view(good).substr(0, good.size() - 1)).status().message(),
              HasSubstr("adapter_path"));
  std::string huge = good;
  huge[20] = huge[21] = huge[22] = '\x7f';  // the name's byte count (after the 16-byte header, the slot)
  EXPECT_THAT(DecodeStepMessage(huge).status().message(), HasSubstr("adapter name of"));
}

TEST(StepCodecTest, OtherVersionsAreRefused) {
  std::string m = EncodeControl(StepKind::kHeartbeat, 0);
  for (uint16_t version : {2, 4}) {
    std::memcpy(m.data() + 4, &version, sizeof(version));
    auto decoded = DecodeStepMessage(m);
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(decoded.status().message(), HasSubstr("version " + std::to_string(version)));
    EXPECT_THAT(decoded.status().message(), HasSubstr("speaks 3"));
  }
}

TEST(StepCodecTest, RankStatusRoundTrips) {
  const std::string ok = EncodeRankStatus(absl::OkStatus());
  EXPECT_EQ(ok.size(), kRankStatusBytes);
  EXPECT_TRUE(DecodeRankStatus(ok).ok());
  const absl::Status missing = absl::NotFoundError("/a/adapter_config.json: no such file");
  EXPECT_EQ(DecodeRankStatus(EncodeRankStatus(missing)), missing);
  // A message longer than the record is cut, not spilled.
  const absl::Status long_one = absl::InvalidArgumentError(std::string(5000, 'x'));
  const std::string record = EncodeRankStatus(long_one);
  EXPECT_EQ(record.size(), kRankStatusBytes);
  absl::Status back = DecodeRankStatus(record);
  EXPECT_EQ(back.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(back.message(), std::string(kRankStatusBytes - 8, 'x'));
  EXPECT_EQ(DecodeRankStatus(record.substr(0, 100)).code(), absl::StatusCode::kDataLoss);
  std::string bad_code = record;
  bad_code[0] = 99;
  EXPECT_EQ(DecodeRankStatus(bad_code).code(), absl::StatusCode::kDataLoss);
}

TEST(StepCodecTest, CorruptMessagesNameTheOffset) {
  std::vector<int32_t> t = {1, 2, 3}, b = {0};
  worker::StepBatch batch;
  batch.seqs.push_back({.seq_id = 1, .tokens = t, .start_pos = 0, .block_table = b});
  const std::string good = EncodeStep(0, batch);
  // Every truncation fails cleanly.
  for (size_t n = 0; n < good.size(); ++n) {
    auto m = DecodeStepMessage(std::string_view(good).substr(0, n));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << n;
    EXPECT_THAT(m.status().message(), HasSubstr("offset")) << n;
  }
  auto trailing = DecodeStepMessage(good + "x");
  EXPECT_THAT(trailing.status().message(), HasSubstr("1 trailing bytes"));
  std::string bad_magic = good;
  bad_magic[0] ^= 1;
  EXPECT_THAT(DecodeStepMessage(bad_magic).status().message(), HasSubstr("magic"));
  std::string bad_kind = good;
  bad_kind[6] = 99;
  EXPECT_THAT(DecodeStepMessage(bad_kind).status().message(), HasSubstr("unknown kind 99"));
  std::string huge = good;
  huge[16] = huge[17] = huge[18] = huge[19] = '\x7f';  // sequence count
  EXPECT_EQ(DecodeStepMessage(huge).status().code(), absl::StatusCode::kDataLoss);
}

std::string TempDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/phi_step_" + name + "_" + std::to_string(getpid());
  mkdir(dir.c_str(), 0755);
  return dir;
}

std::string Leader() { return "127.0.0.1:" + std::to_string(FreePort()); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<float> ReadFloats(const std::string& path) {
  std::string bytes = ReadFile(path);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

long FailedAfterMs(const std::string& log) {
  auto at = log.find("FAILED_AFTER_MS ");
  if (at == std::string::npos) return -1;
  return std::strtol(log.c_str() + at + 16, nullptr, 10);
}

// Runs the scenario with n ranks; returns the output prefix.
std::string RunScenario(int n) {
  const std::string dir = TempDir("scenario" + std::to_string(n));
  RankGroup group(PHI_STEP_RANK_BINARY, dir);
  const std::string leader = Leader();
  for (int r = 0; r < n; ++r) group.Start(r, {"scenario", std::to_string(r), std::to_string(n), leader, dir + "/out"});
  EXPECT_TRUE(group.WaitAll(std::chrono::seconds(60))) << "a rank hung";
  for (auto& p : group.ranks()) {
    EXPECT_EQ(p.exit_code, 0) << "rank " << p.rank << " of " << n << ":\n" << p.Log();
    if (p.rank > 0) {
      // 12 steps replayed, heartbeats during the idle pause, clean shutdown.
      EXPECT_THAT(p.Log(), HasSubstr("12 steps")) << p.Log();
      EXPECT_THAT(p.Log(), ::testing::Not(HasSubstr(" 0 heartbeats"))) << p.Log();
    }
  }
  return dir + "/out";
}

class ScenarioTest : public ::testing::TestWithParam<int> {};

TEST_P(ScenarioTest, SameLogitsAndTokensAsOneRank) {
  static const std::string one = RunScenario(1);
  const std::string many = RunScenario(GetParam());
  const auto ref = ReadFloats(one + ".logits");
  const auto got = ReadFloats(many + ".logits");
  ASSERT_GT(ref.size(), 0u);
  ASSERT_EQ(ref.size(), got.size());
  constexpr size_t kVocab = 96;
  for (size_t row = 0; row < ref.size() / kVocab; ++row) {
    float max_ref = 0, max_diff = 0;
    for (size_t i = row * kVocab; i < (row + 1) * kVocab; ++i) {
      max_ref = std::max(max_ref, std::fabs(ref[i]));
      max_diff = std::max(max_diff, std::fabs(ref[i] - got[i]));
    }
    EXPECT_LE(max_diff, 1e-5f * max_ref) << "row " << row;
  }
  const std::string tokens = ReadFile(one + ".tokens");
  EXPECT_THAT(tokens, HasSubstr("seq 3 token"));
  EXPECT_EQ(ReadFile(many + ".tokens"), tokens);
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, ScenarioTest, ::testing::Values(2, 4));

class FollowerDiesTest : public ::testing::TestWithParam<int> {};

TEST_P(FollowerDiesTest, LeaderStepFailsUnavailableWithin5sAndExitsNonZero) {
  const int n = GetParam();
  RankGroup group(PHI_STEP_RANK_BINARY, TempDir("followerdies" + std::to_string(n)));
  const std::string leader = Leader();
  for (int r = 0; r < n; ++r) group.Start(r, {"follower-dies", std::to_string(r), std::to_string(n), leader});
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(30))) << "a rank hung after a follower died";
  EXPECT_EQ(group.rank(n - 1).exit_code, 128 + SIGKILL);
  const std::string log = group.rank(0).Log();
  EXPECT_EQ(group.rank(0).exit_code, 6) << log;
  EXPECT_THAT(log, HasSubstr("ON_FAILURE UNAVAILABLE"));
  const long ms = FailedAfterMs(log);
  EXPECT_GE(ms, 0) << log;
  EXPECT_LT(ms, 5000) << log;
  for (int r = 1; r < n - 1; ++r) EXPECT_EQ(group.rank(r).exit_code, 5) << group.rank(r).Log();
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, FollowerDiesTest, ::testing::Values(2, 4));

// A follower whose KV allocation fails leaves the group at once with that error (not a
// timeout later), and the leader's first step fails UNAVAILABLE.
TEST(FollowerKvFailsTest, FollowerExitsNamingTheCacheAndLeaderStepFails) {
  const int n = 2;
  RankGroup group(PHI_STEP_RANK_BINARY, TempDir("kvfails"));
  const std::string leader = Leader();
  for (int r = 0; r < n; ++r) group.Start(r, {"follower-kv-fails", std::to_string(r), std::to_string(n), leader});
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(30))) << "a rank hung after a follower's KV allocation failed";
  const std::string follower = group.rank(1).Log();
  EXPECT_EQ(group.rank(1).exit_code, 5) << follower;
  EXPECT_THAT(follower, HasSubstr("RESOURCE_EXHAUSTED: follower rank 1: KV cache of"));
  const std::string log = group.rank(0).Log();
  EXPECT_EQ(group.rank(0).exit_code, 6) << log;
  EXPECT_THAT(log, HasSubstr("ON_FAILURE UNAVAILABLE"));
}

TEST(IdleGroupTest, DeadFollowerNoticedWithoutARequest) {
  RankGroup group(PHI_STEP_RANK_BINARY, TempDir("idle"));
  const std::string leader = Leader();
  for (int r = 0; r < 2; ++r) group.Start(r, {"idle", std::to_string(r), "2", leader});
  // Wait until rank 0 idles, then kill the follower.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (group.rank(0).Log().find("IDLE") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_THAT(group.rank(0).Log(), HasSubstr("IDLE"));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // a heartbeat or two go by
  const auto killed = std::chrono::steady_clock::now();
  kill(group.rank(1).pid, SIGKILL);
  ASSERT_TRUE(group.Wait(group.rank(0), std::chrono::seconds(30))) << "idle leader never noticed";
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_EQ(group.rank(0).exit_code, 6) << group.rank(0).Log();
  EXPECT_THAT(group.rank(0).Log(), HasSubstr("BROKEN_WHILE_IDLE UNAVAILABLE"));
  EXPECT_LT(seconds, 5.0);
}

TEST(LeaderDiesTest, FollowersExitNonZeroWithin5s) {
  const int n = 3;
  RankGroup group(PHI_STEP_RANK_BINARY, TempDir("leaderdies"));
  const std::string leader = Leader();
  for (int r = 0; r < n; ++r) group.Start(r, {"leader-dies", std::to_string(r), std::to_string(n), leader});
  ASSERT_TRUE(group.WaitAll(std::chrono::seconds(30))) << "followers hung after the leader died";
  EXPECT_EQ(group.rank(0).exit_code, 128 + SIGKILL);
  for (int r = 1; r < n; ++r) {
    const std::string log = group.rank(r).Log();
    EXPECT_EQ(group.rank(r).exit_code, 5) << log;
    EXPECT_THAT(log, HasSubstr("lost the leader"));
    const long ms = FailedAfterMs(log);
    EXPECT_GE(ms, 0) << log;
    EXPECT_LT(ms, 5000) << log;
  }
}

}  // namespace
}  // namespace phi::worker::parallel
