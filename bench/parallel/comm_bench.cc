// Communication cost of tensor parallelism on loopback Gloo, per engine step, for the
// Phi-1.5 shape (24 layers, hidden 2048, vocab 51200): the layer all-reduces (one per
// layer, [tokens x hidden] float32), the embedding all-reduce of a vocabulary-split
// embedding, the logits all-gather of a vocabulary-split lm_head, and the leader's step
// broadcast; and, instead of that all-gather for a sampled row, the top-40 candidate path
// (parallel::GatherVocabSplitLogits: each rank's top 41 + log-sum-exp, merged on every rank).
// Rank 0 starts the other ranks as processes of this same program.
//
//   comm_bench [--world-sizes 1,2,4] [--steps 200] [--tokens 1,8,128]
//
// Prints one table; numbers are medians over --steps steps after 20 warm-up steps.
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
#include <random>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/parallel/bench_util.h"
#include "services/worker/parallel/step_channel.h"
#include "services/worker/parallel/step_codec.h"
#include "services/worker/parallel/vocab_gather.h"
#include "services/worker/parallel/worker_group.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kLayers = 24, kHidden = 2048, kVocab = 51200;

struct Result {
  double layers_us = 0, embed_us = 0, gather_us = 0, bcast_us = 0;
  double candidates_us = 0;  // GatherVocabSplitLogits of one top_k = 40 row (select, gather, merge)
  uint64_t candidate_bytes = 0;  // its all-gather output bytes
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs the per-step pattern on every rank; rank 0 returns the timings.
Result RunSteps(phi::worker::parallel::Communicator& comm, int tokens, int steps) {
  const int n = comm.world_size();
  std::vector<float> act(static_cast<size_t>(tokens) * kHidden, 1.0f);
  const size_t local_vocab = kVocab / n;
  std::vector<float> local_logits(local_vocab, 0.5f), logits(local_vocab * n);
  phi::worker::parallel::StepChannel channel(&comm);
  std::vector<int32_t> toks(tokens, 7), blocks((tokens + 15) / 16 + 32, 3);
  phi::worker::StepBatch batch;
  batch.seqs.push_back({.seq_id = 1, .tokens = toks, .start_pos = 500, .block_table = blocks});
  const std::string msg = phi::worker::parallel::EncodeStep(0, batch);
  std::vector<double> layers_us, embed_us, gather_us, bcast_us, candidates_us;
  // One sampled row (temperature 0.8, top_k 40) as the engine asks for it: each rank's top 41
  // of its slice of random logits and its log-sum-exp, merged on every rank.
  std::mt19937 rng(comm.rank() + 1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> slice(local_vocab);
  for (float& v : slice) v = normal(rng);
  phi::worker::StepBatch sample_batch;
  const std::vector<int32_t> one_token = {7};
  sample_batch.seqs.push_back({.seq_id = 1,
                               .tokens = one_token,
                               .start_pos = 500,
                               .block_table = blocks,
                               .num_candidates = 41,
                               .sampling = {.temperature = 0.8f, .top_k = 40}});
  phi::worker::parallel::VocabGatherStats stats;
  phi::worker::StepLogits sampled;
  uint64_t res_bytes = 0;
  for (int s = 0; s < steps + 20; ++s) {
    auto t0 = Clock::now();
    if (n > 1) {
      if (comm.rank() == 0) {
        if (!channel.Send(msg).ok()) std::exit(2);
      } else if (!channel.Receive().ok()) {
        std::exit(2);
      }
    }
    auto t1 = Clock::now();
    if (!comm.AllReduceSum(act).ok()) std::exit(2);  // the embedding rows
    auto t2 = Clock::now();
    for (int l = 0; l < kLayers; ++l) {
      if (!comm.AllReduceSum(act).ok()) std::exit(2);
    }
    auto t3 = Clock::now();
    if (!comm.AllGather(local_logits.data(), logits.data(), local_vocab * sizeof(float)).ok()) std::exit(2);
    auto t4 = Clock::now();
    sampled.first_row = {0};
    sampled.num_rows = {1};
    const uint64_t bytes_before = stats.bytes_gathered;
    if (!phi::worker::parallel::GatherVocabSplitLogits(comm, sample_batch, slice.data(), comm.rank() * local_vocab,
                                               local_vocab, kVocab, kVocab, &sampled, &stats)
             .ok()) {
      std::exit(2);
    }
    auto t5 = Clock::now();
    if (s >= 20) {
      auto us = [](auto a, auto b) { return std::chrono::duration<double, std::micro>(b - a).count(); };
      bcast_us.push_back(us(t0, t1));
      embed_us.push_back(us(t1, t2));
      layers_us.push_back(us(t2, t3));
      gather_us.push_back(us(t3, t4));
      candidates_us.push_back(us(t4, t5));
    }
    if (s == 0) res_bytes = stats.bytes_gathered - bytes_before;
  }
  return {Median(layers_us), Median(embed_us), Median(gather_us), Median(bcast_us), Median(candidates_us), res_bytes};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> world_sizes = {1, 2}, token_counts = {1, 8, 128};
  int steps = 200;
  // Child ranks: comm_bench --rank R N LEADER TOKENS STEPS
  if (argc == 7 && std::strcmp(argv[1], "--rank") == 0) {
    phi::worker::parallel::GroupOptions o;
    o.rank = std::atoi(argv[2]);
    o.world_size = std::atoi(argv[3]);
    o.leader = argv[4];
    o.op_timeout = std::chrono::seconds(30);
    auto group = phi::worker::parallel::WorkerGroup::Join(o);
    if (!group.ok()) return 3;
    RunSteps((*group)->host(), std::atoi(argv[5]), std::atoi(argv[6]));
    return 0;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--world-sizes") == 0) world_sizes = phi::bench::ParseIntList(argv[i + 1]);
    if (std::strcmp(argv[i], "--tokens") == 0) token_counts = phi::bench::ParseIntList(argv[i + 1]);
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::atoi(argv[i + 1]);
  }
  std::printf("Loopback Gloo, Phi-1.5 shape: %d layers x hidden %d, vocab %d; medians of %d steps\n", kLayers,
              kHidden, kVocab, steps);
  std::printf("| N | tokens/step | step bcast us | embed all-reduce us | %d layer all-reduces us | per layer us | "
              "logits all-gather us | comm per step us | all-reduced B/token | bound B/token | all-gathered B/row | "
              "top-40 candidates (select + all-gather + merge) us | candidates all-gathered B/row |\n",
              kLayers);
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int n : world_sizes) {
    for (int tokens : token_counts) {
      const std::string leader = "127.0.0.1:" + std::to_string(phi::bench::FreeLoopbackPort());
      std::vector<pid_t> children;
      for (int r = 1; r < n; ++r) {
        std::vector<std::string> args = {argv[0], "--rank", std::to_string(r), std::to_string(n), leader,
                                         std::to_string(tokens), std::to_string(steps)};
        std::vector<char*> cargs;
        for (auto& a : args) cargs.push_back(a.data());
        cargs.push_back(nullptr);
        pid_t pid;
        if (posix_spawn(&pid, argv[0], nullptr, nullptr, cargs.data(), environ) == 0) children.push_back(pid);
      }
      phi::worker::parallel::GroupOptions o;
      o.world_size = n;
      o.leader = leader;
      o.op_timeout = std::chrono::seconds(30);
      auto group = phi::worker::parallel::WorkerGroup::Join(o);
      if (!group.ok()) {
        std::fprintf(stderr, "%s\n", group.status().ToString().c_str());
        return 1;
      }
      Result res = RunSteps((*group)->host(), tokens, steps);
      for (pid_t pid : children) {
        int status = 0;
        waitpid(pid, &status, 0);
      }
      // Payload bytes each rank contributes to all-reduces per token: 24 layers + embedding.
      const double ar_bytes = n > 1 ? (kLayers + 1.0) * kHidden * 4 : 0;
      const double bound = n > 1 ? 1.0 * kLayers * kHidden * 4 : 0;
      const double ag_bytes = n > 1 ? 1.0 * kVocab * 4 : 0;
      std::printf("| %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f | %.0f | %.1f | %llu |\n", n,
                  tokens, res.bcast_us, res.embed_us, res.layers_us, res.layers_us / kLayers, res.gather_us,
                  res.bcast_us + res.embed_us + res.layers_us + res.gather_us, ar_bytes, bound, ag_bytes,
                  res.candidates_us, static_cast<unsigned long long>(n > 1 ? res.candidate_bytes : 0));
      std::fflush(stdout);
    }
  }
  return 0;
}
