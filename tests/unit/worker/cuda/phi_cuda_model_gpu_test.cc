// The whole forward pass of a tiny Phi on the GPU against a dense CPU forward built from the
// kernels' twins, plus the properties the engine relies on: chunked prefill and decode agree
// with one-shot prefill, CUDA-graph decode agrees with eager decode, greedy tokens do not
// depend on the rest of the batch, and bad steps are refused with the reason. Label: gpu.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "tests/unit/worker/cuda/dense_forward_reference.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/cuda/model_test_util.h"

namespace phi::worker::cuda {
namespace {

using testing::DenseCpuForward;
using testing::Download;
using testing::FillRandomWeights;
using testing::GreedyToken;

using testing::RelNormError;

PhiCudaConfig TinyConfig() {
  return testing::TinyPhiCudaConfig(600);  // several decode partitions
}

PhiCudaOptions TinyOptions(bool graphs) {
  PhiCudaOptions o;
  o.max_tokens_per_step = 512;
  o.max_seqs = 8;
  o.max_logit_rows = 512;
  o.block_size = 16;
  o.use_cuda_graphs = graphs;
  return o;
}

std::unique_ptr<PhiCudaModel> MakeModel(bool graphs) {
  std::unique_ptr<PhiCudaModel> m;
  if (!PhiCudaModel::Create(TinyConfig(), TinyOptions(graphs), &m).ok()) return nullptr;
  if (!FillRandomWeights(*m, 1234, 0.08f).ok()) return nullptr;
  if (!m->AllocateKvCache(200).ok()) return nullptr;
  return m;
}

std::vector<int32_t> Prompt(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % 300);
  return t;
}

std::vector<int32_t> Blocks(int first, int count) {
  std::vector<int32_t> b(count);
  std::iota(b.begin(), b.end(), first);
  std::reverse(b.begin(), b.end());  // non-contiguous order on purpose
  return b;
}

TEST(PhiCudaModelGpu, PrefillLogitsMatchDenseCpuForward) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(false);
  ASSERT_NE(m, nullptr);
  const std::vector<int32_t> prompt = Prompt(37, 1);
  const std::vector<int32_t> blocks = Blocks(10, 3);
  PhiSeqInput s;
  s.tokens = prompt;
  s.block_table = blocks;
  s.all_logits = true;
  PhiStepOutput out;
  PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &out));
  ASSERT_EQ(out.num_rows[0], 37);
  std::vector<float> got(static_cast<size_t>(37) * 300);
  PHI_ASSERT_CUDA_OK(m->CopyLogits(out.first_row[0], 37, got.data()));
  const std::vector<float> want = DenseCpuForward(*m, prompt);
  EXPECT_LT(RelNormError(got, want), 2e-2);
}

// Last-row logits of a prompt run as chunks and then decoded token by token equal those of
// the same tokens run in one prefill step.
TEST(PhiCudaModelGpu, ChunkedPrefillAndDecodeMatchOneShot) {
  PHI_REQUIRE_GPU();
  for (bool graphs : {false, true}) {
    SCOPED_TRACE(graphs ? "graphs" : "eager");
    auto m = MakeModel(graphs);
    ASSERT_NE(m, nullptr);
    const std::vector<int32_t> all = Prompt(300, 2);  // past one decode partition (256)
    const std::vector<int32_t> one_blocks = Blocks(0, 19), chunk_blocks = Blocks(100, 19);
    PhiSeqInput one;
    one.tokens = all;
    one.block_table = one_blocks;
    one.all_logits = true;
    PhiStepOutput o1;
    PHI_ASSERT_CUDA_OK(m->Forward({&one, 1}, &o1));
    std::vector<float> ref(static_cast<size_t>(300) * 300);
    PHI_ASSERT_CUDA_OK(m->CopyLogits(o1.first_row[0], 300, ref.data()));

    int pos = 0;
    for (int chunk : {17, 100, 150}) {
      PhiSeqInput s;
      s.tokens = std::span<const int32_t>(all).subspan(pos, chunk);
      s.start_pos = pos;
      s.block_table = chunk_blocks;
      PhiStepOutput o;
      PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &o));
      pos += chunk;
      std::vector<float> got(300);
      PHI_ASSERT_CUDA_OK(m->CopyLogits(o.first_row[0], 1, got.data()));
      EXPECT_LT(RelNormError(got, std::vector<float>(ref.begin() + (pos - 1) * 300,
                                                     ref.begin() + pos * 300)),
                1e-2)
          << "after chunk ending at " << pos;
    }
    for (; pos < 300; ++pos) {  // decode the rest (graphs capture and replay)
      PhiSeqInput s;
      s.tokens = std::span<const int32_t>(all).subspan(pos, 1);
      s.start_pos = pos;
      s.block_table = chunk_blocks;
      PhiStepOutput o;
      PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &o));
      std::vector<float> got(300);
      PHI_ASSERT_CUDA_OK(m->CopyLogits(o.first_row[0], 1, got.data()));
      const std::vector<float> want(ref.begin() + pos * 300, ref.begin() + (pos + 1) * 300);
      EXPECT_LT(RelNormError(got, want), 1e-2) << "decode at " << pos;
    }
    if (graphs) {
      EXPECT_EQ(m->num_captured_graphs(), 1);
    }
  }
}

// Greedy continuations of a prompt alone and inside a batch of three (padded to a graph
// bucket of four) are the same tokens.
TEST(PhiCudaModelGpu, GreedyTokensDoNotDependOnTheBatch) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(true);
  ASSERT_NE(m, nullptr);
  auto generate = [&](int batch, int first_block) {
    std::vector<std::vector<int32_t>> toks, tables;
    for (int b = 0; b < batch; ++b) {
      toks.push_back(Prompt(20 + 7 * b, 3 + b));
      tables.push_back(Blocks(first_block + 10 * b, 4));
    }
    std::vector<int32_t> gen;
    std::vector<int> pos(batch, 0);
    for (int step = 0; step < 12; ++step) {
      std::vector<PhiSeqInput> in(batch);
      for (int b = 0; b < batch; ++b) {
        in[b].tokens = std::span<const int32_t>(toks[b]).subspan(pos[b]);
        in[b].start_pos = pos[b];
        in[b].block_table = tables[b];
      }
      PhiStepOutput o;
      if (!m->Forward(in, &o).ok()) return std::vector<int32_t>{-1};
      for (int b = 0; b < batch; ++b) {
        pos[b] = static_cast<int>(toks[b].size());
        toks[b].push_back(GreedyToken(*m, o, b));
      }
      gen.push_back(toks[0].back());
    }
    return gen;
  };
  const std::vector<int32_t> alone = generate(1, 0), batched = generate(3, 50);
  EXPECT_EQ(alone, batched);
}

// The top-candidate records cover every logits column, the last ones too: on a padded
// vocabulary those are the ids past the tokenizer, which transformers' log_softmax and argmax
// include. The last id's bias is raised so that it wins: the record lists it first, and its
// log-sum-exp is the whole row's.
TEST(PhiCudaModelGpu, CandidatesCoverEveryColumn) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(false);
  ASSERT_NE(m, nullptr);
  const int v = m->config().vocab_size;
  std::vector<float> bias = Download(m->weights().lm_b, v);
  bias[v - 1] += 6.0f;
  PHI_ASSERT_CUDART(cudaMemcpy(m->weights().lm_b, bias.data(), v * sizeof(float), cudaMemcpyHostToDevice));
  const std::vector<int32_t> toks = Prompt(9, 5), blocks = Blocks(0, 1);
  PhiSeqInput in;
  in.tokens = toks;
  in.block_table = blocks;
  PhiStepOutput o;
  PHI_ASSERT_CUDA_OK(m->Forward({&in, 1}, &o));
  std::vector<float> row(v);
  PHI_ASSERT_CUDA_OK(m->CopyLogits(o.first_row[0] + o.num_rows[0] - 1, 1, row.data()));
  double mx = -INFINITY, sum = 0;
  for (float x : row) mx = std::max<double>(mx, x);
  for (float x : row) sum += std::exp(x - mx);
  const double lse = mx + std::log(sum);
  ASSERT_EQ(std::max_element(row.begin(), row.end()) - row.begin(), v - 1);

  // The same row as a candidate record (recomputed in place; engine/candidate_record_layout.h).
  in.num_candidates = 5;
  in.candidate_lse = true;
  PhiStepOutput oc;
  PHI_ASSERT_CUDA_OK(m->Forward({&in, 1}, &oc));
  ASSERT_EQ(oc.candidate_slices, 1);
  ASSERT_GE(oc.candidate_record[0], 0);
  const char* rec =
      oc.candidate_records.data() + oc.candidate_record[0] * CandidateRecordBytes(oc.candidate_stride);
  CandidateRecordHeader head;
  CandidateRecordEntry first;
  std::memcpy(&head, rec, sizeof(head));
  std::memcpy(&first, rec + sizeof(head), sizeof(first));
  EXPECT_NEAR(head.log_sum_exp, lse, 1e-6 * std::abs(lse) + 1e-6);
  EXPECT_EQ(head.valid, 5u);
  EXPECT_EQ(head.truncated, 1u);
  EXPECT_EQ(first.id, v - 1);
  EXPECT_EQ(first.value, row[v - 1]);
}

TEST(PhiCudaModelGpu, RefusesBadStepsWithTheReason) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(false);
  ASSERT_NE(m, nullptr);
  const std::vector<int32_t> blocks = Blocks(0, 2);
  const std::vector<int32_t> bad_id = {1, 300}, ok = {1, 2};
  PhiSeqInput s;
  s.block_table = blocks;
  PhiStepOutput o;
  s.tokens = bad_id;
  CudaStatus st = m->Forward({&s, 1}, &o);
  EXPECT_EQ(st.code(), CudaStatus::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("token id 300"), std::string::npos) << st.message();
  s.tokens = ok;
  s.start_pos = 599;
  st = m->Forward({&s, 1}, &o);
  EXPECT_NE(st.message().find("max_positions 600"), std::string::npos) << st.message();
  s.start_pos = 31;  // needs 3 blocks, table has 2
  st = m->Forward({&s, 1}, &o);
  EXPECT_NE(st.message().find("block_table has 2"), std::string::npos) << st.message();
  std::unique_ptr<PhiCudaModel> m2;
  PHI_ASSERT_CUDA_OK(PhiCudaModel::Create(TinyConfig(), TinyOptions(false), &m2));
  st = m2->AllocateKvCache(1 << 30);
  EXPECT_EQ(st.code(), CudaStatus::Code::kResourceExhausted);
  EXPECT_NE(st.message().find("free"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace phi::worker::cuda

namespace phi::worker::cuda {
namespace {

using testing::DenseCpuForward;
using testing::FillRandomWeights;
using testing::GreedyToken;

// One layer with every Phi-1.5 dimension (hidden 2048, 32 heads, intermediate 8192, vocab
// 51200): the launch shapes of the real model (LayerNorm's register path at 2048, lm_head's
// one-token GEMV over 51200 rows with the final LayerNorm inside, 32-head attention grids),
// which the tiny configurations above do not reach. Prefill logits against the dense CPU
// forward; three greedy decode steps with the default path (fused, programmatic launch, graphs)
// equal to the plain unfused eager decode bit for bit, and to the dense forward.
TEST(PhiCudaModelGpu, Phi15LayerShapesMatchDenseCpuForwardAndPlainDecode) {
  PHI_REQUIRE_GPU();
  PhiCudaConfig c;  // the defaults are Phi-1.5's
  c.num_layers = 1;
  auto make = [&](bool fast) {
    PhiCudaOptions o;
    o.max_tokens_per_step = 64;
    o.max_seqs = 2;
    o.max_logit_rows = 64;
    o.use_cuda_graphs = fast;
    o.fuse_decode = fast;
    o.programmatic_launch = fast;
    std::unique_ptr<PhiCudaModel> m;
    if (!PhiCudaModel::Create(c, o, &m).ok()) return std::unique_ptr<PhiCudaModel>();
    if (!FillRandomWeights(*m, 4321, 0.03f).ok()) return std::unique_ptr<PhiCudaModel>();
    if (!m->AllocateKvCache(8).ok()) return std::unique_ptr<PhiCudaModel>();
    return m;
  };
  auto fast = make(true), plain = make(false);
  ASSERT_NE(fast, nullptr);
  ASSERT_NE(plain, nullptr);
  const int n = 19, steps = 3, vocab = c.vocab_size;
  std::vector<int32_t> tokens = Prompt(n, 5);
  const std::vector<int32_t> blocks = Blocks(2, 4);
  std::vector<float> got(static_cast<size_t>(n + steps) * vocab);
  for (PhiCudaModel* m : {fast.get(), plain.get()}) {
    PhiSeqInput s;
    s.tokens = tokens;
    s.block_table = blocks;
    s.all_logits = m == fast.get();
    PhiStepOutput out;
    PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &out));
    if (m == fast.get()) PHI_ASSERT_CUDA_OK(m->CopyLogits(out.first_row[0], n, got.data()));
  }
  for (int step = 0; step < steps; ++step) {
    const float* last = got.data() + static_cast<size_t>(n + step - 1) * vocab;
    tokens.push_back(static_cast<int32_t>(std::max_element(last, last + vocab) - last));
    std::vector<float> rows[2];
    for (int v = 0; v < 2; ++v) {
      PhiCudaModel* m = v == 0 ? fast.get() : plain.get();
      PhiSeqInput s;
      s.tokens = std::span<const int32_t>(&tokens.back(), 1);
      s.start_pos = n + step;
      s.block_table = blocks;
      PhiStepOutput out;
      PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &out));
      rows[v].resize(vocab);
      PHI_ASSERT_CUDA_OK(m->CopyLogits(out.first_row[0], 1, rows[v].data()));
    }
    ASSERT_EQ(0, std::memcmp(rows[0].data(), rows[1].data(), 4 * static_cast<size_t>(vocab)))
        << "fused decode differs from the plain decode at step " << step;
    std::copy(rows[0].begin(), rows[0].end(), got.begin() + static_cast<size_t>(n + step) * vocab);
  }
  EXPECT_EQ(fast->num_captured_graphs(), 1);
  const std::vector<float> want = DenseCpuForward(*fast, tokens);  // n + steps rows, as `got`
  EXPECT_LT(RelNormError(got, want), 2e-2);
}

}  // namespace
}  // namespace phi::worker::cuda
