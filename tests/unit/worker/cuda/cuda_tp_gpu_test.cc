// Tensor parallelism on the CUDA backend over NCCL: CudaModelRunner ranks with
// make_comm = NcclCommunicator (unique id through the real rendezvous store) against the
// unsharded CudaModelRunner on the same tiny random checkpoint (PHI_TEST_MODEL_DIR, head_dim
// 64, 2 heads). The same teacher-forced steps run on both: a 21-token prefill with every
// row's logits, five decodes, and a mixed batch (a decode beside a 5-token prefill).
//  - A group of one: the sharded code path (embedding all-reduce, rank-0 bias and residual,
//    one all-reduce per layer, lm_head all-gather and row assembly) must give the unsharded
//    logits (it only adds collectives of one rank).
//  - Two processes on two GPUs (skipped with fewer): each rank reads half the heads, fc1
//    columns and vocabulary; logits within BF16 tolerance of the unsharded runner, greedy
//    argmax equal wherever the unsharded top two differ by more than the tolerance.
// Label gpu; skips without a GPU or the model. The test binary re-executes itself as each
// rank (PHI_CUDA_TP_CHILD_RANK) so that every rank is a fresh CUDA process.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "services/worker/backends/cuda/cuda_model_runner.h"
#include "services/worker/parallel/kv_client.h"
#include "services/worker/parallel/nccl_communicator.h"
#include "services/worker/parallel/rendezvous_server.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"

extern char** environ;

namespace phi::worker::cuda {
namespace {

using namespace std::chrono_literals;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

CudaRunnerOptions BaseOptions() {
  CudaRunnerOptions o;
  o.model.max_tokens_per_step = 64;
  o.model.max_seqs = 4;
  o.model.max_logit_rows = 64;
  // Ranks with collectives never capture graphs; the reference must not either, because a
  // graph's decode attention runs over max_positions and splits its work differently.
  o.model.use_cuda_graphs = false;
  return o;
}

// `rank` of `world` with its NCCL communicator made through `store` on the model's stream;
// `enqueue_only`: collectives only enqueue and the step waits once (what phi-worker does),
// else each collective is waited for.
absl::StatusOr<std::unique_ptr<CudaModelRunner>> ShardRunner(parallel::KvClient* store, int rank,
                                                             int world, int device,
                                                             bool enqueue_only) {
  CudaRunnerOptions o = BaseOptions();
  o.device = device;
  o.rank = rank;
  o.world_size = world;
  o.make_comm = [store, rank, world, enqueue_only](int dev, cudaStream_t stream)
      -> absl::StatusOr<CudaRunnerOptions::Comm> {
    parallel::NcclOptions n;
    n.device = dev;
    n.stream = stream;
    n.timeout = 30s;
    n.wait_each_operation = !enqueue_only;
    auto comm = parallel::NcclCommunicator::Create(store, rank, world, n);
    if (!comm.ok()) return comm.status();
    parallel::NcclCommunicator* raw = comm->get();
    CudaRunnerOptions::Comm c{*std::move(comm), nullptr};
    if (enqueue_only) c.synchronize = [raw] { return raw->Synchronize(); };
    return c;
  };
  return CudaModelRunner::Create(Env("PHI_TEST_MODEL_DIR"), o);
}

std::vector<int32_t> Tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// The steps every runner runs; returns all their logit rows, one after another.
absl::StatusOr<std::vector<float>> RunScript(ModelRunner& r) {
  if (absl::Status st = r.AllocateKvCache({.num_blocks = 32, .block_size = 16}); !st.ok()) return st;
  const int vocab = r.shape().tokenizer_vocab_size > 0 ? r.shape().tokenizer_vocab_size : r.shape().vocab_size;
  const std::vector<int32_t> a = Tokens(27, vocab, 7), b = Tokens(5, vocab, 8);
  const std::vector<int32_t> blocks_a = {2, 7}, blocks_b = {11};
  std::vector<float> all;
  auto step = [&](const StepBatch& batch) -> absl::Status {
    StepLogits out;
    if (absl::Status st = r.Step(batch, &out); !st.ok()) return st;
    all.insert(all.end(), out.data.begin(), out.data.end());
    return absl::OkStatus();
  };
  StepBatch prefill;
  prefill.seqs.push_back({.seq_id = 1, .tokens = std::span(a).first(21), .start_pos = 0,
                          .block_table = blocks_a, .all_logits = true});
  if (absl::Status st = step(prefill); !st.ok()) return st;
  for (int i = 21; i < 26; ++i) {
    StepBatch decode;
    decode.seqs.push_back({.seq_id = 1, .tokens = std::span(a).subspan(i, 1), .start_pos = i,
                           .block_table = blocks_a});
    if (absl::Status st = step(decode); !st.ok()) return st;
  }
  StepBatch mixed;
  mixed.seqs.push_back({.seq_id = 1, .tokens = std::span(a).subspan(26, 1), .start_pos = 26,
                        .block_table = blocks_a});
  mixed.seqs.push_back({.seq_id = 2, .tokens = b, .start_pos = 0, .block_table = blocks_b,
                        .all_logits = true});
  if (absl::Status st = step(mixed); !st.ok()) return st;
  return all;
}

absl::StatusOr<std::vector<float>> UnshardedLogits(int* vocab = nullptr) {
  auto r = CudaModelRunner::Create(Env("PHI_TEST_MODEL_DIR"), BaseOptions());
  if (!r.ok()) return r.status();
  if (vocab != nullptr) *vocab = (*r)->shape().vocab_size;
  return RunScript(**r);
}

#define PHI_REQUIRE_MODEL()                                                              \
  do {                                                                                   \
    PHI_REQUIRE_GPU();                                                                   \
    if (Env("PHI_TEST_MODEL_DIR").empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set"; \
  } while (0)

TEST(CudaTpGpu, GroupOfOneOverNcclEqualsUnsharded) {
  PHI_REQUIRE_MODEL();
  auto want = UnshardedLogits();
  ASSERT_TRUE(want.ok()) << want.status();
  for (bool enqueue_only : {false, true}) {
    SCOPED_TRACE(enqueue_only ? "enqueue-only collectives, one wait per step"
                              : "every collective waited for");
    auto server = parallel::RendezvousServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    parallel::KvClient store("127.0.0.1:" + std::to_string((*server)->port()), 10s);
    auto sharded = ShardRunner(&store, 0, 1, 0, enqueue_only);
    ASSERT_TRUE(sharded.ok()) << sharded.status();
    ASSERT_NE((*sharded)->comm(), nullptr);
    EXPECT_EQ((*sharded)->comm()->name(), "nccl");
    auto got = RunScript(**sharded);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want->size());
    // Same kernels, same shapes; the collectives of one rank only copy.
    EXPECT_LT(testing::RelNormError(*got, *want), 1e-6);
  }
}

// One rank of the two-process test (run by the parent as a child process).
int RunChildRank(int rank) {
  parallel::KvClient store(Env("PHI_CUDA_TP_STORE"), 30s);
  auto runner = ShardRunner(&store, rank, 2, rank, /*enqueue_only=*/true);
  if (!runner.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, runner.status().ToString().c_str());
    return 2;
  }
  auto logits = RunScript(**runner);
  if (!logits.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, logits.status().ToString().c_str());
    return 3;
  }
  std::ofstream out(Env("PHI_CUDA_TP_OUT") + "." + std::to_string(rank), std::ios::binary);
  out.write(reinterpret_cast<const char*>(logits->data()),
            static_cast<std::streamsize>(logits->size() * sizeof(float)));
  return out.good() ? 0 : 4;
}

TEST(CudaTpGpu, TwoProcessesOverNcclMatchUnsharded) {
  PHI_REQUIRE_MODEL();
  int devices = 0;
  ASSERT_EQ(cudaGetDeviceCount(&devices), cudaSuccess);
  if (devices < 2) GTEST_SKIP() << devices << " GPU(s) visible; two ranks need two";
  auto server = parallel::RendezvousServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string out = ::testing::TempDir() + "cuda_tp_logits_" + std::to_string(getpid());
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<std::string> env_s;
    for (char** e = environ; *e != nullptr; ++e) env_s.emplace_back(*e);
    env_s.push_back("PHI_CUDA_TP_CHILD_RANK=" + std::to_string(rank));
    env_s.push_back("PHI_CUDA_TP_STORE=127.0.0.1:" + std::to_string((*server)->port()));
    env_s.push_back("PHI_CUDA_TP_OUT=" + out);
    std::vector<char*> envp;
    for (std::string& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string self = "/proc/self/exe";
    char* argv[] = {self.data(), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()), 0);
    pids.push_back(pid);
  }
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  for (pid_t pid : pids) {
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        for (pid_t p : pids) kill(p, SIGKILL);
        FAIL() << "rank processes did not finish within 180 s";
      }
      std::this_thread::sleep_for(50ms);
    }
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a rank failed, status " << status;
  }
  int vocab = 0;
  auto want = UnshardedLogits(&vocab);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_GT(vocab, 0);
  ASSERT_EQ(want->size() % vocab, 0u);
  for (int rank = 0; rank < 2; ++rank) {
    std::ifstream in(out + "." + std::to_string(rank), std::ios::binary);
    std::vector<float> got(want->size());
    in.read(reinterpret_cast<char*>(got.data()), static_cast<std::streamsize>(got.size() * sizeof(float)));
    ASSERT_EQ(static_cast<size_t>(in.gcount()), got.size() * sizeof(float)) << "rank " << rank;
    std::remove((out + "." + std::to_string(rank)).c_str());
    // F32 partial sums in another order, then BF16 activations: BF16 tolerance.
    constexpr double kTol = 1e-2;
    EXPECT_LT(testing::RelNormError(got, *want), kTol) << "rank " << rank;
    for (size_t row = 0; row < want->size() / vocab; ++row) {
      const float* w = want->data() + row * vocab;
      const float* g = got.data() + row * vocab;
      std::vector<int> idx(vocab);
      for (int i = 0; i < vocab; ++i) idx[i] = i;
      std::partial_sort(idx.begin(), idx.begin() + 2, idx.end(), [&](int x, int y) { return w[x] > w[y]; });
      const double scale = std::max(1.0f, std::fabs(w[idx[0]]));
      if (w[idx[0]] - w[idx[1]] > 4 * kTol * scale) {
        EXPECT_EQ(std::max_element(g, g + vocab) - g, idx[0]) << "rank " << rank << " row " << row;
      }
    }
  }
}

}  // namespace
}  // namespace phi::worker::cuda

int main(int argc, char** argv) {
  const char* child = std::getenv("PHI_CUDA_TP_CHILD_RANK");
  if (child != nullptr) return phi::worker::cuda::RunChildRank(std::atoi(child));
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
