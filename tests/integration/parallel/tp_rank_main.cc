// One rank of a tensor-parallel CPU group on a real (random) Phi model folder:
//   parallel_tp_rank RANK WORLD_SIZE LEADER MODEL_DIR OUT_PREFIX [engine]
// Every rank opens its shard of the checkpoint and builds the CPU runner over the group's
// Gloo communicator. Rank 0 runs the step scenario through LeaderRunner and writes the
// logits and greedy tokens (with "engine": the Engine's sampling scenario instead, see
// engine_sampling_scenario.h); the others replay its steps (RunFollower). Each rank prints
// "WEIGHT_BYTES <rank> <bytes>" (the GEMM weights it holds and streams per step).
// PHI_TP_WEIGHTS=int8 in the environment: every rank quantizes its slice (default F32).
// Exit codes: 0 ok, 1 failure (stderr says why), 3 join failed, 5 follower failed.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/parallel/follower.h"
#include "services/worker/parallel/leader_runner.h"
#include "services/worker/parallel/worker_group.h"
#include "tests/integration/parallel/engine_sampling_scenario.h"
#include "tests/unit/worker/parallel/scenario.h"

int main(int argc, char** argv) {
  using namespace phi;
  using namespace phi::worker;
  if (argc != 6 && argc != 7) {
    std::fprintf(stderr, "usage: %s RANK WORLD_SIZE LEADER MODEL_DIR OUT_PREFIX [engine]\n", argv[0]);
    return 1;
  }
  parallel::GroupOptions options;
  options.rank = std::atoi(argv[1]);
  options.world_size = std::atoi(argv[2]);
  options.leader = argv[3];
  options.join_timeout = std::chrono::seconds(60);
  options.op_timeout = std::chrono::seconds(20);
  auto group = parallel::WorkerGroup::Join(options);
  if (!group.ok()) {
    std::fprintf(stderr, "JOIN_FAILED %s\n", group.status().ToString().c_str());
    return 3;
  }
  cpu::CpuRunnerOptions ro;
  const char* weights = std::getenv("PHI_TP_WEIGHTS");
  ro.weights = weights != nullptr && std::string(weights) == "int8" ? cpu::WeightFormat::kInt8 : cpu::WeightFormat::kF32;
  ro.num_threads = 1;
  ro.comm = &(*group)->host();
  auto runner = cpu::CpuModelRunner::Create(argv[4], ro);
  if (!runner.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", options.rank, runner.status().ToString().c_str());
    return 1;
  }
  std::printf("WEIGHT_BYTES %d %lld\n", options.rank, static_cast<long long>((*runner)->weight_bytes_per_step()));
  std::fflush(stdout);
  if (options.rank != 0) {
    auto s = parallel::RunFollower(runner->get(), &(*group)->host());
    if (!s.ok()) {
      std::fprintf(stderr, "follower: %s\n", s.ToString().c_str());
      return 5;
    }
    return 0;
  }
  parallel::LeaderRunner leader(runner->get(), &(*group)->host(), {});
  if (argc == 7) {  // the Engine allocates the KV cache itself
    cpu::CpuModelRunner* shard = runner->get();
    const int rc = parallel::testing::RunEngineSamplingScenario(
        leader, [shard] { return shard->vocab_gather_stats(); }, argv[5]);
    leader.Shutdown();
    return rc;
  }
  if (auto s = leader.AllocateKvCache({.num_blocks = parallel::testing::kScenarioBlocks,
                                       .block_size = parallel::testing::kScenarioBlockSize});
      !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  const int rc = parallel::testing::RunScenario(leader, argv[5]);
  leader.Shutdown();
  return rc;
}
