// PhiCudaModel with LoRA adapters in its slots, on a tiny Phi: logits of each adapter (all six
// targets; q/v only; the MLP and dense on some layers) against the dense CPU forward with the
// adapter's deltas (dense_forward_reference.h), at the tolerance of the base model's test; a
// batch mixing adapters and the base equals each sequence run alone, bit for bit; decode
// steps with adapters take the eager path and agree with one-shot prefill while base-only
// decode keeps its CUDA graph; SetAdapter and Forward refuse what they cannot serve, naming
// it. Label: gpu (emu on the CPU emulator).
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "tests/unit/worker/cuda/dense_forward_reference.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/cuda/model_test_util.h"

namespace phi::worker::cuda {
namespace {

using testing::DenseCpuForward;
using testing::FillRandomWeights;
using testing::RandomBf16Values;
using testing::RelNormError;

constexpr int kVocab = 300;  // TinyPhiCudaConfig's

// gemv_max_m 0: every GEMM of a prefill runs the same row-wise kernel whatever the batch, so
// a sequence alone and in a batch go through the same arithmetic (the base's own property;
// LoRA must not break it).
std::unique_ptr<PhiCudaModel> MakeModel(bool graphs, int gemv_max_m = 1) {
  PhiCudaOptions o;
  o.max_tokens_per_step = 128;
  o.max_seqs = 8;
  o.max_logit_rows = 128;
  o.block_size = 16;
  o.use_cuda_graphs = graphs;
  o.gemv_max_m = gemv_max_m;
  o.max_adapter_slots = 3;
  o.max_adapter_rank = 16;
  std::unique_ptr<PhiCudaModel> m;
  if (!PhiCudaModel::Create(testing::TinyPhiCudaConfig(256), o, &m).ok()) return nullptr;
  if (!FillRandomWeights(*m, 99, 0.08f).ok()) return nullptr;
  if (!m->AllocateKvCache(64).ok()) return nullptr;
  return m;
}

// An adapter's host matrices (BF16-exact values, so the device copy is exact) and the
// PhiCudaAdapter view of them.
struct HostAdapter {
  std::vector<std::vector<float>> store;
  PhiCudaAdapter view;
};

// targets[t]: whether target t (LoraTarget order) is adapted; skip_layer: a layer left alone.
HostAdapter MakeAdapter(const PhiCudaConfig& c, int rank, float alpha, std::array<bool, 6> targets,
                        uint32_t seed, int skip_layer = -1) {
  const int h = c.hidden_size, ha = c.num_heads * c.head_dim, in_ = c.intermediate_size;
  const int ins[6] = {h, h, h, ha, h, in_}, outs[6] = {ha, ha, ha, h, in_, h};
  HostAdapter a;
  a.store.reserve(2 * 6 * c.num_layers);
  a.view.layers.resize(c.num_layers);
  for (int li = 0; li < c.num_layers; ++li) {
    for (int t = 0; t < 6; ++t) {
      if (!targets[t] || li == skip_layer) continue;
      PhiCudaLoraWeights& w = a.view.layers[li][t];
      a.store.push_back(RandomBf16Values(static_cast<size_t>(rank) * ins[t], seed++, 0.1f));
      w.a = a.store.back();
      a.store.push_back(RandomBf16Values(static_cast<size_t>(outs[t]) * rank, seed++, 0.1f));
      w.b = a.store.back();
      w.rank = rank;
      w.scaling = alpha / static_cast<float>(rank);
    }
  }
  return a;
}

constexpr std::array<bool, 6> kAll = {true, true, true, true, true, true};
constexpr std::array<bool, 6> kQv = {true, false, true, false, false, false};
constexpr std::array<bool, 6> kMlpDense = {false, false, false, true, true, true};

// Three adapters in slots 1..3.
std::vector<HostAdapter> InstallAdapters(PhiCudaModel& m) {
  std::vector<HostAdapter> a;
  a.push_back(MakeAdapter(m.config(), 8, 16.0f, kAll, 1000));
  a.push_back(MakeAdapter(m.config(), 16, 32.0f, kQv, 2000));
  a.push_back(MakeAdapter(m.config(), 4, 8.0f, kMlpDense, 3000, /*skip_layer=*/0));
  for (int s = 1; s <= 3; ++s) {
    const CudaStatus st = m.SetAdapter(s, &a[s - 1].view);
    EXPECT_TRUE(st.ok()) << st.message();
  }
  return a;
}

std::vector<int32_t> Prompt(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % kVocab);
  return t;
}

std::vector<int32_t> Blocks(int first, int count) {
  std::vector<int32_t> b(count);
  for (int i = 0; i < count; ++i) b[i] = first + count - 1 - i;
  return b;
}

std::vector<float> Rows(const PhiCudaModel& m, int first, int n) {
  std::vector<float> r(static_cast<size_t>(n) * kVocab);
  EXPECT_TRUE(m.CopyLogits(first, n, r.data()).ok());
  return r;
}

TEST(PhiCudaLoraGpu, PrefillLogitsMatchDenseForwardWithTheAdapter) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(false);
  ASSERT_NE(m, nullptr);
  const std::vector<HostAdapter> adapters = InstallAdapters(*m);
  const std::vector<int32_t> prompt = Prompt(21, 5), blocks = Blocks(3, 2);
  const std::vector<float> base = DenseCpuForward(*m, prompt);
  for (int slot = 0; slot <= 3; ++slot) {
    SCOPED_TRACE("slot " + std::to_string(slot));
    PhiSeqInput s;
    s.tokens = prompt;
    s.block_table = blocks;
    s.all_logits = true;
    s.adapter_slot = slot;
    PhiStepOutput out;
    PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &out));
    const std::vector<float> got = Rows(*m, out.first_row[0], 21);
    const std::vector<float> want =
        slot == 0 ? base : DenseCpuForward(*m, prompt, &adapters[slot - 1].view);
    EXPECT_LT(RelNormError(got, want), 2e-2);
    // The adapter moves the logits far more than the tolerance: the check above can fail.
    if (slot > 0) {
      EXPECT_GT(RelNormError(want, base), 0.1);
    }
  }
}

// Sequences of slots 2, 0, 1, 1, 3 in one step (the two 1s one segment), each of several
// tokens, against each alone: the same last-row logits, bit for bit.
TEST(PhiCudaLoraGpu, MixedBatchEqualsEachSequenceAlone) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(false, /*gemv_max_m=*/0);
  ASSERT_NE(m, nullptr);
  const std::vector<HostAdapter> adapters = InstallAdapters(*m);
  const int slots[] = {2, 0, 1, 1, 3};
  const int lens[] = {5, 3, 9, 2, 7};
  std::vector<std::vector<int32_t>> prompts, tables;
  for (int i = 0; i < 5; ++i) {
    prompts.push_back(Prompt(lens[i], 40 + i));
    tables.push_back(Blocks(4 * i, 1));
  }
  std::vector<PhiSeqInput> batch(5);
  for (int i = 0; i < 5; ++i) {
    batch[i].tokens = prompts[i];
    batch[i].block_table = tables[i];
    batch[i].adapter_slot = slots[i];
  }
  PhiStepOutput mixed;
  PHI_ASSERT_CUDA_OK(m->Forward(batch, &mixed));
  std::vector<std::vector<float>> together;
  for (int i = 0; i < 5; ++i) together.push_back(Rows(*m, mixed.first_row[i], 1));
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i) + " slot " + std::to_string(slots[i]));
    PhiStepOutput alone;
    PHI_ASSERT_CUDA_OK(m->Forward({&batch[i], 1}, &alone));
    const std::vector<float> got = Rows(*m, alone.first_row[0], 1);
    EXPECT_EQ(std::memcmp(got.data(), together[i].data(), 4 * got.size()), 0);
  }
}

// Prefill then decode a batch of the base and two adapters with graphs and fused decode on:
// the adapter steps run eagerly, every decode row agrees with the one-shot prefill of the same
// tokens, and a later base-only decode still takes (and captures) its graph.
TEST(PhiCudaLoraGpu, DecodeWithAdaptersMatchesOneShotAndBaseKeepsItsGraph) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(true);
  ASSERT_NE(m, nullptr);
  const std::vector<HostAdapter> adapters = InstallAdapters(*m);
  const int slots[] = {0, 1, 2};
  const int prompt_len = 6, steps = 4, total = prompt_len + steps;
  std::vector<std::vector<int32_t>> toks, tables;
  for (int i = 0; i < 3; ++i) {
    toks.push_back(Prompt(total, 70 + i));
    tables.push_back(Blocks(10 + 2 * i, 1));
  }
  std::vector<PhiSeqInput> batch(3);
  for (int i = 0; i < 3; ++i) {
    batch[i].tokens = std::span<const int32_t>(toks[i]).first(prompt_len);
    batch[i].block_table = tables[i];
    batch[i].adapter_slot = slots[i];
  }
  PhiStepOutput o;
  PHI_ASSERT_CUDA_OK(m->Forward(batch, &o));
  std::vector<std::vector<float>> got(3);
  for (int pos = prompt_len; pos < total; ++pos) {
    for (int i = 0; i < 3; ++i) {
      batch[i].tokens = std::span<const int32_t>(toks[i]).subspan(pos, 1);
      batch[i].start_pos = pos;
    }
    PHI_ASSERT_CUDA_OK(m->Forward(batch, &o));
    for (int i = 0; i < 3; ++i) {
      const std::vector<float> row = Rows(*m, o.first_row[i], 1);
      got[i].insert(got[i].end(), row.begin(), row.end());
    }
  }
  EXPECT_EQ(m->num_captured_graphs(), 0);
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE("slot " + std::to_string(slots[i]));
    const std::vector<float> ref =
        DenseCpuForward(*m, toks[i], slots[i] == 0 ? nullptr : &adapters[slots[i] - 1].view);
    const std::vector<float> want(ref.begin() + prompt_len * kVocab, ref.end());
    EXPECT_LT(RelNormError(got[i], want), 2e-2);
  }
  // The base sequence alone, one more token: a graph step again.
  PhiSeqInput base = batch[0];
  base.tokens = std::span<const int32_t>(toks[0]).subspan(total - 1, 1);
  base.start_pos = total - 1;
  PHI_ASSERT_CUDA_OK(m->Forward({&base, 1}, &o));
  EXPECT_EQ(m->num_captured_graphs(), 1);
}

TEST(PhiCudaLoraGpu, RefusesWhatItCannotServeNamingIt) {
  PHI_REQUIRE_GPU();
  auto m = MakeModel(false);
  ASSERT_NE(m, nullptr);
  const PhiCudaConfig& c = m->config();
  HostAdapter ok = MakeAdapter(c, 8, 16.0f, kQv, 1);
  auto expect_invalid = [](const CudaStatus& st, const std::string& words) {
    EXPECT_EQ(st.code(), CudaStatus::Code::kInvalidArgument) << st.message();
    EXPECT_NE(st.message().find(words), std::string::npos) << st.message();
  };
  expect_invalid(m->SetAdapter(0, &ok.view), "slot 0 outside [1, 3]");
  expect_invalid(m->SetAdapter(4, &ok.view), "slot 4 outside [1, 3]");
  HostAdapter too_big = MakeAdapter(c, 32, 16.0f, kQv, 2);
  expect_invalid(m->SetAdapter(1, &too_big.view), "layer 0 q_proj: rank 32 outside [1, max_adapter_rank 16]");
  HostAdapter short_b = MakeAdapter(c, 8, 16.0f, kQv, 3);
  short_b.view.layers[1][2].b = short_b.view.layers[1][2].b.first(10);
  expect_invalid(m->SetAdapter(1, &short_b.view), "layer 1 v_proj: A has 1024 values and B 10");
  HostAdapter few_layers = ok;
  few_layers.view.layers.pop_back();
  expect_invalid(m->SetAdapter(1, &few_layers.view), "adapter has 1 layers, the model 2");

  const std::vector<int32_t> prompt = Prompt(4, 1), blocks = Blocks(0, 1);
  PhiSeqInput s;
  s.tokens = prompt;
  s.block_table = blocks;
  PhiStepOutput out;
  s.adapter_slot = 2;
  expect_invalid(m->Forward({&s, 1}, &out), "sequence 0: adapter_slot 2 holds no adapter");
  s.adapter_slot = 4;
  expect_invalid(m->Forward({&s, 1}, &out), "adapter_slot 4 outside [0, 3]");
  PHI_ASSERT_CUDA_OK(m->SetAdapter(2, &ok.view));
  s.adapter_slot = 2;
  PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &out));
  PHI_ASSERT_CUDA_OK(m->SetAdapter(2, nullptr));
  expect_invalid(m->Forward({&s, 1}, &out), "adapter_slot 2 holds no adapter");
}

}  // namespace
}  // namespace phi::worker::cuda
