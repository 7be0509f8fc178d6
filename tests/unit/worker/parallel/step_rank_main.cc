// One rank of a test group that runs engine-like steps through LeaderRunner (rank 0) and
// RunFollower (the others), with ToyShardedRunner as every rank's shard:
//   parallel_step_rank MODE RANK WORLD_SIZE LEADER [OUT_PREFIX]
// Modes:
//   scenario       rank 0 runs a fixed schedule (chunked prefill, decodes, a sequence that
//                  joins, one that leaves and whose blocks get reused, an idle pause with
//                  heartbeats), greedy-decoding from the logits, and writes every logits
//                  row to OUT_PREFIX.logits (float32) and the tokens to OUT_PREFIX.tokens
//   forever        rank 0 decodes until a Step fails
//   follower-dies  a follower SIGKILLs itself at its 20th step (rank 0 runs forever)
//   leader-dies    rank 0 SIGKILLs itself after 20 steps
//   follower-kv-fails  the last rank's KV allocation fails (RESOURCE_EXHAUSTED), the
//                  leader's succeeds; rank 0 then runs forever
//   idle           rank 0 runs 3 steps, then idles until the group breaks (the test kills
//                  a follower); it prints "BROKEN_WHILE_IDLE <status>" and exits 6
// Exit codes: 0 ok, 1 bad usage or result, 3 join failed, 5 follower loop failed,
// 6 a leader Step failed (on_failure ran first). Failures print
// "FAILED_AFTER_MS <ms since the last good step> <status>".
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "services/worker/parallel/follower.h"
#include "services/worker/parallel/leader_runner.h"
#include "services/worker/parallel/worker_group.h"
#include "tests/unit/worker/parallel/scenario.h"
#include "tests/unit/worker/parallel/toy_sharded_runner.h"

namespace {

using namespace phi;
using namespace phi::worker;
using Clock = std::chrono::steady_clock;

long MsSince(Clock::time_point t) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

// Counts the shard's steps; can die at a given one (follower-dies).
class CountingShard final : public worker::ModelRunner {
 public:
  CountingShard(worker::ModelRunner* inner, int die_at, bool fail_kv = false)
      : inner_(inner), die_at_(die_at), fail_kv_(fail_kv) {}
  const worker::ModelShape& shape() const override { return inner_->shape(); }
  absl::Status AllocateKvCache(const worker::KvCacheSpec& spec) override {
    if (fail_kv_) return absl::ResourceExhaustedError("toy: no memory for the KV cache");
    return inner_->AllocateKvCache(spec);
  }
  int64_t KvBlockBytes(int32_t bs) const override { return inner_->KvBlockBytes(bs); }
  absl::Status Step(const worker::StepBatch& batch, worker::StepLogits* out) override {
    if (++steps_ == die_at_) raise(SIGKILL);
    auto s = inner_->Step(batch, out);
    if (s.ok()) last_ok = Clock::now();
    return s;
  }
  std::atomic<Clock::time_point> last_ok{Clock::now()};

 private:
  worker::ModelRunner* inner_;
  int die_at_;
  bool fail_kv_;
  int steps_ = 0;
};

int32_t Argmax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

int Forever(parallel::LeaderRunner& runner, int die_after) {
  std::vector<int32_t> blocks;
  for (int32_t b = 0; b < 40; ++b) blocks.push_back(b);
  std::vector<int32_t> tokens = {1, 2, 3};
  auto last_ok = Clock::now();
  for (int step = 0;; ++step) {
    if (step == die_after) raise(SIGKILL);
    worker::StepBatch batch;
    worker::SequenceStep ss;
    ss.seq_id = 9;
    const int32_t start = step == 0 ? 0 : 2 + step;
    std::vector<int32_t> t = step == 0 ? tokens : std::vector<int32_t>{tokens.back()};
    ss.tokens = t;
    ss.start_pos = start;
    ss.block_table = blocks;
    batch.seqs.push_back(ss);
    worker::StepLogits logits;
    auto st = runner.Step(batch, &logits);
    if (!st.ok()) {
      std::fprintf(stderr, "FAILED_AFTER_MS %ld %s\n", MsSince(last_ok), st.ToString().c_str());
      // Later steps fail at once with the same status.
      if (runner.Step(batch, &logits).ok()) return 1;
      return 6;
    }
    last_ok = Clock::now();
    tokens.push_back(Argmax(logits.LastRow(0)));
    if (start > 100) return 1;  // no failure came
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int Idle(parallel::LeaderRunner& runner) {
  std::vector<int32_t> blocks = {0, 1, 2};
  std::vector<int32_t> tokens = {1, 2, 3};
  for (int step = 0; step < 3; ++step) {
    worker::StepBatch batch;
    batch.seqs.push_back({.seq_id = 1, .tokens = std::span<const int32_t>(&tokens[step], 1), .start_pos = step,
                          .block_table = blocks});
    worker::StepLogits logits;
    if (!runner.Step(batch, &logits).ok()) return 1;
  }
  std::printf("IDLE\n");
  std::fflush(stdout);
  for (int i = 0; i < 6000; ++i) {  // at most 60 s
    if (auto s = runner.health(); !s.ok()) {
      std::fprintf(stderr, "BROKEN_WHILE_IDLE %s\n", s.ToString().c_str());
      return 6;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODE RANK WORLD_SIZE LEADER [OUT_PREFIX]\n", argv[0]);
    return 1;
  }
  const std::string mode = argv[1];
  parallel::GroupOptions options;
  options.rank = std::atoi(argv[2]);
  options.world_size = std::atoi(argv[3]);
  options.leader = argv[4];
  options.join_timeout = std::chrono::seconds(20);
  options.op_timeout = std::chrono::seconds(3);
  auto group = parallel::WorkerGroup::Join(options);
  if (!group.ok()) {
    std::fprintf(stderr, "JOIN_FAILED %s\n", group.status().ToString().c_str());
    return 3;
  }
  parallel::Communicator& host = (*group)->host();
  parallel::testing::ToyShardedRunner toy(&host, {});
  const bool last = options.rank == options.world_size - 1;
  CountingShard shard(&toy, mode == "follower-dies" && last ? 20 : -1, mode == "follower-kv-fails" && last);

  if (options.rank != 0) {
    parallel::FollowerStats stats;
    auto s = parallel::RunFollower(&shard, &host, &stats);
    if (!s.ok()) {
      std::fprintf(stderr, "FAILED_AFTER_MS %ld %s\n", MsSince(shard.last_ok.load()), s.ToString().c_str());
      return 5;
    }
    std::printf("follower %d: %llu steps, %llu heartbeats, shutdown\n", options.rank,
                static_cast<unsigned long long>(stats.steps.load()),
                static_cast<unsigned long long>(stats.heartbeats.load()));
    return 0;
  }
  std::atomic<int> failures{0};
  parallel::LeaderOptions lo;
  lo.heartbeat_interval = std::chrono::milliseconds(300);
  lo.on_failure = [&](const absl::Status& s) {
    ++failures;
    std::fprintf(stderr, "ON_FAILURE %s\n", s.ToString().c_str());
  };
  parallel::LeaderRunner runner(&shard, &host, lo);
  if (auto s = runner.AllocateKvCache({.num_blocks = parallel::testing::kScenarioBlocks, .block_size = parallel::testing::kScenarioBlockSize}); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  int rc = 1;
  if (mode == "scenario") {
    rc = parallel::testing::RunScenario(runner, argc > 5 ? argv[5] : "/dev/null");
    std::printf("leader: %llu steps, %llu broadcast bytes, %llu all-reduces\n",
                static_cast<unsigned long long>(runner.steps()),
                static_cast<unsigned long long>(runner.broadcast_bytes()),
                static_cast<unsigned long long>(toy.all_reduce_calls()));
  } else if (mode == "idle") {
    rc = Idle(runner);
  } else {
    rc = Forever(runner, mode == "leader-dies" ? 20 : -1);
    if (rc == 6 && failures.load() != 1) rc = 1;
  }
  runner.Shutdown();
  return rc;
}
