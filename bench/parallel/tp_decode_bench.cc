// Decode throughput of a tensor-parallel CPU group and what its communication costs:
// N processes on loopback (this program starts ranks 1..N-1 as copies of itself), each
// with its shard of the model on the CPU runner, rank 0 driving steps through LeaderRunner
// exactly as phi-worker does. Batch-1 decode after a short prefill, sampling with
// temperature 0.8 and top_k 40: "rows" asks the group for whole logits rows (the
// all-gather of every rank's vocabulary slice), "candidates" lets it gather only each
// rank's top 41 candidates and log-sum-exp (SequenceStep::num_candidates), as the engine does.
//
//   tp_decode_bench --model DIR [--world-sizes 1,2] [--threads 2] [--steps 32] [--prompt 32]
//                   [--dtype bf16|f32] [--sampling rows,candidates]
//
// --threads is the total per group: each rank gets threads / N. Prints one table.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/parallel/timed_communicator.h"
#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "bench/parallel/bench_util.h"
#include "services/worker/parallel/follower.h"
#include "services/worker/parallel/leader_runner.h"
#include "services/worker/parallel/worker_group.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace phi;
using namespace phi::worker;

struct Args {
  std::string model, dtype = "bf16";
  std::vector<int> world_sizes = {1, 2};
  std::vector<std::string> sampling = {"rows", "candidates"};
  int threads = 2, steps = 32, prompt = 32;
};

// One rank's work. Rank 0 prints the table row.
int RunRank(const Args& a, int rank, int n, const std::string& leader, const std::string& sampling) {
  parallel::GroupOptions o;
  o.rank = rank;
  o.world_size = n;
  o.leader = leader;
  o.join_timeout = std::chrono::seconds(600);  // loading 2.8 GB takes a while on a busy machine
  o.op_timeout = std::chrono::seconds(120);
  auto group = parallel::WorkerGroup::Join(o);
  if (!group.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, group.status().ToString().c_str());
    return 3;
  }
  parallel::bench::TimedCommunicator timed(&(*group)->host());
  cpu::CpuRunnerOptions ro;
  ro.weights = a.dtype == "f32" ? cpu::WeightFormat::kF32 : cpu::WeightFormat::kBF16;
  ro.num_threads = std::max(1, a.threads / n);
  ro.comm = &timed;
  const auto load0 = Clock::now();
  auto runner = cpu::CpuModelRunner::Create(a.model, ro);
  if (!runner.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, runner.status().ToString().c_str());
    return 1;
  }
  const double load_s = std::chrono::duration<double>(Clock::now() - load0).count();
  if (rank != 0) {
    auto s = parallel::RunFollower(runner->get(), &timed);
    return s.ok() ? 0 : 5;
  }
  parallel::LeaderRunner leader_runner(runner->get(), &timed, {});
  const int32_t bs = 16;
  if (!leader_runner.AllocateKvCache({.num_blocks = (a.prompt + a.steps) / bs + 2, .block_size = bs}).ok()) return 1;
  std::vector<int32_t> blocks;
  for (int32_t b = 0; b < (a.prompt + a.steps) / bs + 2; ++b) blocks.push_back(b);
  std::vector<int32_t> tokens;
  for (int i = 0; i < a.prompt; ++i) tokens.push_back(100 + 7 * i);
  worker::StepLogits logits;
  const worker::SamplingOptions options{.temperature = 0.8f, .top_k = 40, .seed = 1};
  // The engine samples over every output row (as transformers does), padded ones included.
  const int32_t vocab_limit = (*runner)->shape().vocab_size;
  const int32_t num_candidates =
      sampling == "candidates" ? worker::CandidatesNeeded(options, vocab_limit, false, 0, 64) : 0;
  auto step = [&](int32_t start, std::span<const int32_t> toks) {
    worker::StepBatch batch;
    batch.seqs.push_back({.seq_id = 1,
                          .tokens = toks,
                          .start_pos = start,
                          .block_table = blocks,
                          .num_candidates = num_candidates,
                          .sampling = options});
    if (auto s = leader_runner.Step(batch, &logits); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      std::exit(1);
    }
    const uint64_t counter = tokens.size();
    tokens.push_back(logits.HasCandidates(0)
                         ? worker::SampleFromCandidates(logits.candidates[0], options, counter, false, 0).token_id
                         : worker::SampleToken(logits.LastRow(0), vocab_limit, options, counter, nullptr, false, 0)
                               .token_id);
  };
  const auto p0 = Clock::now();
  step(0, std::span<const int32_t>(tokens.data(), a.prompt));
  const double prefill_s = std::chrono::duration<double>(Clock::now() - p0).count();
  timed.Reset();
  std::vector<double> step_ms;
  for (int i = 0; i < a.steps; ++i) {
    const auto t0 = Clock::now();
    step(static_cast<int32_t>(tokens.size()) - 1, std::span<const int32_t>(&tokens.back(), 1));
    step_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::vector<double> sorted = step_ms;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  const double steps = a.steps;
  const double comm_ms = 1e3 * (timed.all_reduce.seconds + timed.all_gather.seconds + timed.broadcast.seconds) / steps;
  std::printf("| %d | %s | %d | %.1f | %.0f | %.2f | %.1f | %.2f | %.2f | %.2f | %.1f | %.0f | %.0f | %.0f |\n", n,
              sampling.c_str(), ro.num_threads, load_s, prefill_s * 1e3, median, 1e3 / median, comm_ms,
              1e3 * timed.all_reduce.seconds / steps, 1e3 * timed.all_gather.seconds / steps,
              timed.all_reduce.calls / steps, timed.all_reduce.bytes / steps, timed.all_gather.bytes / steps,
              1.0 * timed.broadcast.bytes / steps);
  std::fflush(stdout);
  leader_runner.Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  int child_rank = -1, child_n = 0;
  std::string child_leader;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--model") a.model = argv[i + 1];
    else if (k == "--dtype") a.dtype = argv[i + 1];
    else if (k == "--world-sizes") a.world_sizes = phi::bench::ParseIntList(argv[i + 1]);
    else if (k == "--threads") a.threads = std::atoi(argv[i + 1]);
    else if (k == "--steps") a.steps = std::atoi(argv[i + 1]);
    else if (k == "--prompt") a.prompt = std::atoi(argv[i + 1]);
    else if (k == "--sampling") a.sampling = absl::StrSplit(argv[i + 1], ',');
    else if (k == "--child-rank") child_rank = std::atoi(argv[i + 1]);
    else if (k == "--child-n") child_n = std::atoi(argv[i + 1]);
    else if (k == "--child-leader") child_leader = argv[i + 1];
  }
  if (a.model.empty()) {
    std::fprintf(stderr, "usage: %s --model DIR [--world-sizes 1,2] [--threads 2] [--steps 32] [--prompt 32]\n",
                 argv[0]);
    return 2;
  }
  if (child_rank > 0) return RunRank(a, child_rank, child_n, child_leader, a.sampling.front());
  std::printf("TP decode, batch 1, %s weights, %d-token prompt then %d decode steps (temperature 0.8, top_k 40); "
              "%d threads per group\n", a.dtype.c_str(), a.prompt, a.steps, a.threads);
  std::printf("| N | logits | threads/rank | load s | prefill ms | decode step ms (median) | tokens/s | in collectives ms/step (incl. waiting for the slower rank) | "
              "all-reduce ms/step | all-gather ms/step | all-reduces/step | all-reduced B/step | all-gathered B/step | "
              "step broadcast B/step |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const std::string& sampling : a.sampling) {
    for (int n : a.world_sizes) {
      const std::string leader = "127.0.0.1:" + std::to_string(phi::bench::FreeLoopbackPort());
      std::vector<pid_t> children;
      for (int r = 1; r < n; ++r) {
        std::vector<std::string> args(argv, argv + argc);
        for (auto extra : {std::string("--child-rank"), std::to_string(r), std::string("--child-n"), std::to_string(n),
                           std::string("--child-leader"), leader, std::string("--sampling"), sampling}) {
          args.push_back(extra);
        }
        std::vector<char*> cargs;
        for (auto& s : args) cargs.push_back(s.data());
        cargs.push_back(nullptr);
        pid_t pid;
        if (posix_spawn(&pid, argv[0], nullptr, nullptr, cargs.data(), environ) == 0) children.push_back(pid);
      }
      const int rc = RunRank(a, 0, n, leader, sampling);
      for (pid_t pid : children) {
        int status = 0;
        waitpid(pid, &status, 0);
      }
      if (rc != 0) return rc;
    }
  }
  return 0;
}
