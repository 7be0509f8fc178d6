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
#include "tests/unit/worker/parallel/toy_sharded_runner.h"

namespace {

using namespace phi;
using Clock = std::chrono::steady_clock;

long MsSince(Clock::time_point t) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

// Counts the shard's steps; can die at a given one (follower-dies).
class CountingShard final : public worker::ModelRunner {
 public:
  CountingShard(worker::ModelRunner* inner, int die_at) : inner_(inner), die_at_(die_at) {}
  const worker::ModelShape& shape() const override { return inner_->shape(); }
  absl::Status AllocateKvCache(const worker::KvCacheSpec& spec) override { return inner_->AllocateKvCache(spec); }
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
  int steps_ = 0;
};

int32_t Argmax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

struct Seq {
  uint64_t id;
  std::vector<int32_t> tokens;  // prompt + generated
  int32_t cached = 0;           // positions in the KV cache
  std::vector<int32_t> blocks;
};

int Scenario(parallel::LeaderRunner& runner, const std::string& out_prefix) {
  constexpr int32_t kBlock = 4;
  std::vector<int32_t> free_blocks;
  for (int32_t b = 39; b >= 0; --b) free_blocks.push_back(b);
  std::ofstream logits_out(out_prefix + ".logits", std::ios::binary);
  std::ofstream tokens_out(out_prefix + ".tokens");
  std::map<uint64_t, Seq> seqs;
  seqs[1] = {1, {5, 17, 33, 2, 91, 60, 8}};
  seqs[2] = {2, {44, 3, 12}};
  for (int step = 0; step < 12; ++step) {
    if (step == 4) seqs[3] = {3, {7, 7, 80, 1, 64, 22, 19, 5, 50}};
    if (step == 7) {  // sequence 2 finishes: its blocks go back and get reused
      for (int32_t b : seqs[2].blocks) free_blocks.push_back(b);
      seqs.erase(2);
    }
    if (step == 6) std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // idle: heartbeats
    worker::StepBatch batch;
    std::vector<std::vector<int32_t>> step_tokens;
    step_tokens.reserve(seqs.size());
    for (auto& [id, s] : seqs) {
      // Sequence 1's prompt goes in two chunks (5 + 2); others whole.
      int32_t n = static_cast<int32_t>(s.tokens.size()) - s.cached;
      if (id == 1 && s.cached == 0) n = 5;
      while (static_cast<int32_t>(s.blocks.size()) * kBlock < s.cached + n) {
        s.blocks.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
      step_tokens.emplace_back(s.tokens.begin() + s.cached, s.tokens.begin() + s.cached + n);
      worker::SequenceStep ss;
      ss.seq_id = id;
      ss.tokens = step_tokens.back();
      ss.start_pos = s.cached;
      ss.block_table = s.blocks;
      ss.all_logits = (s.cached == 0 && id != 1);
      batch.seqs.push_back(ss);
    }
    worker::StepLogits logits;
    if (auto st = runner.Step(batch, &logits); !st.ok()) {
      std::fprintf(stderr, "step %d: %s\n", step, st.ToString().c_str());
      return 1;
    }
    logits_out.write(reinterpret_cast<const char*>(logits.data.data()), logits.data.size() * sizeof(float));
    size_t i = 0;
    for (auto& [id, s] : seqs) {
      s.cached += static_cast<int32_t>(batch.seqs[i].tokens.size());
      if (s.cached == static_cast<int32_t>(s.tokens.size())) {
        const int32_t next = Argmax(logits.LastRow(i));
        s.tokens.push_back(next);
        tokens_out << "step " << step << " seq " << id << " token " << next << "\n";
      }
      ++i;
    }
  }
  return 0;
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
  CountingShard shard(&toy, mode == "follower-dies" && options.rank == options.world_size - 1 ? 20 : -1);

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
  if (auto s = runner.AllocateKvCache({.num_blocks = 40, .block_size = 4}); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  int rc = 1;
  if (mode == "scenario") {
    rc = Scenario(runner, argc > 5 ? argv[5] : "/dev/null");
    std::printf("leader: %llu steps, %llu broadcast bytes, %llu all-reduces\n",
                static_cast<unsigned long long>(runner.steps()),
                static_cast<unsigned long long>(runner.broadcast_bytes()),
                static_cast<unsigned long long>(toy.all_reduce_calls()));
  } else {
    rc = Forever(runner, mode == "leader-dies" ? 20 : -1);
    if (rc == 6 && failures.load() != 1) rc = 1;
  }
  runner.Shutdown();
  return rc;
}
