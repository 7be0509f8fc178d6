// The CUDA ModelRunner with LoRA adapters against the CPU ModelRunner with the same adapters,
// on the tiny random checkpoint (PHI_TEST_MODEL_DIR): adapters written in the PEFT format
// (tests/unit/worker/lora/lora_test_files.h) and read by lora::LoadPeftAdapter, installed in
// both runners' slots; a batch of the base and two adapters gives each sequence the CPU
// runner's logits within the tolerance of the base model's runner test, and slot changes
// between steps (replace, clear) take effect. Label: gpu (emu on the CPU emulator).
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/backends/cuda/cuda_model_runner.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/model/phi_checkpoint.h"
#include "tests/unit/worker/cuda/candidate_batch.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/cuda/host_staged_group.h"
#include "tests/unit/worker/lora/lora_test_files.h"

namespace phi::worker::cuda {
namespace {

using lora::LoraModule;

using candidate_test::ModelDir;
using candidate_test::Prompt;

constexpr int kSlots = 2;

CudaRunnerOptions GpuOptions() {
  CudaRunnerOptions o;
  o.model.max_tokens_per_step = 256;
  o.model.max_seqs = 8;
  o.model.max_logit_rows = 256;
  o.model.max_adapter_slots = kSlots;
  o.model.max_adapter_rank = 16;
  return o;
}

const std::vector<LoraModule> kAllModules = {LoraModule::kQ,     LoraModule::kK,   LoraModule::kV,
                                             LoraModule::kDense, LoraModule::kFc1, LoraModule::kFc2};

struct Pair {
  std::unique_ptr<CudaModelRunner> gpu;
  std::unique_ptr<cpu::CpuModelRunner> cpu;
};

Pair Load() {
  Pair p;
  auto g = CudaModelRunner::Create(ModelDir(), GpuOptions());
  EXPECT_TRUE(g.ok()) << g.status();
  cpu::CpuRunnerOptions co;
  co.max_adapter_slots = kSlots;
  auto c = cpu::CpuModelRunner::Create(ModelDir(), co);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!g.ok() || !c.ok()) return {};
  p.gpu = std::move(*g);
  p.cpu = std::move(*c);
  EXPECT_TRUE(p.gpu->AllocateKvCache({.num_blocks = 32, .block_size = 16}).ok());
  EXPECT_TRUE(p.cpu->AllocateKvCache({.num_blocks = 32, .block_size = 16}).ok());
  return p;
}

// A PEFT adapter folder of rank r on `modules`, read back by the loader. lora_alpha 0.25:
// deltas of a fifth to a half of the base layers' outputs on this checkpoint.
std::shared_ptr<const lora::LoraAdapter> Adapter(const lora::testing::ScratchDir& dir,
                                                 const std::string& name, int r,
                                                 const std::vector<LoraModule>& modules,
                                                 uint32_t seed, model::DType dtype) {
  auto ck = model::PhiCheckpoint::Open(ModelDir());
  EXPECT_TRUE(ck.ok()) << ck.status();
  if (!ck.ok()) return nullptr;
  const model::PhiConfig& c = (*ck)->config();
  const auto files = lora::testing::PeftAdapterFiles::Random(c, r, modules, seed, dtype, 0.25);
  EXPECT_TRUE(files.Write(dir.Sub(name)).ok());
  auto a = lora::LoadPeftAdapter(name, dir.Sub(name), c, lora::LoraLimits{});
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *a : nullptr;
}

// Every row of sequence i.
std::vector<float> SeqRows(const StepLogits& l, size_t i) {
  const auto first = l.data.begin() + static_cast<size_t>(l.first_row[i]) * l.vocab_size;
  return {first, first + static_cast<size_t>(l.num_rows[i]) * l.vocab_size};
}

TEST(CudaRunnerLoraGpu, MixedBatchMatchesCpuRunnerPerAdapter) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  Pair p = Load();
  ASSERT_TRUE(p.gpu && p.cpu);
  ASSERT_EQ(p.gpu->max_adapter_slots(), kSlots);
  lora::testing::ScratchDir dir;
  const auto all = Adapter(dir, "all", 8, kAllModules, 1, model::DType::kF32);
  const auto qv = Adapter(dir, "qv", 16, {LoraModule::kQ, LoraModule::kV}, 2, model::DType::kBF16);
  ASSERT_TRUE(all && qv);
  for (auto* r : {static_cast<ModelRunner*>(p.gpu.get()), static_cast<ModelRunner*>(p.cpu.get())}) {
    ASSERT_TRUE(r->SetAdapter(1, all).ok());
    ASSERT_TRUE(r->SetAdapter(2, qv).ok());
  }
  const int tv = p.gpu->shape().tokenizer_vocab_size;
  const std::vector<int32_t> a = Prompt(13, tv, 1), b = Prompt(9, tv, 2), c = Prompt(11, tv, 3);
  const std::vector<int32_t> ta = {0}, tb = {1}, tc = {2};
  StepBatch batch;
  batch.seqs.push_back({.seq_id = 1, .tokens = a, .block_table = ta, .all_logits = true, .adapter_slot = 1});
  batch.seqs.push_back({.seq_id = 2, .tokens = b, .block_table = tb, .all_logits = true});
  batch.seqs.push_back({.seq_id = 3, .tokens = c, .block_table = tc, .all_logits = true, .adapter_slot = 2});
  StepLogits lg, lc;
  ASSERT_TRUE(p.gpu->Step(batch, &lg).ok());
  ASSERT_TRUE(p.cpu->Step(batch, &lc).ok());
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    EXPECT_LT(testing::RelNormError(SeqRows(lg, i), SeqRows(lc, i)), 3e-2);
  }

  // Slot 1 cleared, slot 2 replaced by `all`: the same tokens as base and as `all`.
  ASSERT_TRUE(p.gpu->SetAdapter(1, nullptr).ok());
  ASSERT_TRUE(p.gpu->SetAdapter(2, all).ok());
  StepBatch again;
  again.seqs.push_back({.seq_id = 4, .tokens = a, .block_table = ta, .all_logits = true, .adapter_slot = 2});
  again.seqs.push_back({.seq_id = 5, .tokens = b, .block_table = tb, .all_logits = true, .adapter_slot = 0});
  StepLogits lg2;
  ASSERT_TRUE(p.gpu->Step(again, &lg2).ok());
  // `all` on a in slot 2 as it was in slot 1; b on the base (other batch sizes: the GPU's
  // GEMMs may round differently, the emulator's do not).
  EXPECT_LT(testing::RelNormError(SeqRows(lg2, 0), SeqRows(lg, 0)), 1e-2);
  EXPECT_LT(testing::RelNormError(SeqRows(lg2, 1), SeqRows(lg, 1)), 1e-2);
  // The adapter moves the logits well past the tolerance above: the comparison can fail.
  StepBatch base;
  base.seqs.push_back({.seq_id = 6, .tokens = a, .block_table = ta, .all_logits = true});
  StepLogits lb;
  ASSERT_TRUE(p.gpu->Step(base, &lb).ok());
  EXPECT_GT(testing::RelNormError(SeqRows(lg, 0), SeqRows(lb, 0)), 0.1);
  StepBatch empty = base;
  empty.seqs[0].adapter_slot = 1;
  const absl::Status st = p.gpu->Step(empty, &lb);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("adapter_slot 1 holds no adapter"), std::string::npos) << st;
}

// Two ranks (heads, fc1 and vocabulary in halves; q/k/v/fc1 B rows and dense/fc2 A columns
// sliced) against one unsharded runner, the base and two adapters in one batch.
TEST(CudaRunnerLoraGpu, TwoTensorParallelRanksEqualOneRunner) {
  PHI_REQUIRE_GPU();
  if (ModelDir().empty()) GTEST_SKIP() << "PHI_TEST_MODEL_DIR is not set";
  constexpr int kWorld = 2;
  lora::testing::ScratchDir dir;
  const auto all = Adapter(dir, "all", 8, kAllModules, 3, model::DType::kF32);
  const auto mlp = Adapter(dir, "mlp", 4, {LoraModule::kFc1, LoraModule::kDense, LoraModule::kFc2}, 4,
                           model::DType::kF16);
  ASSERT_TRUE(all && mlp);
  auto one = CudaModelRunner::Create(ModelDir(), GpuOptions());
  ASSERT_TRUE(one.ok()) << one.status();
  testing::HostStagedGroup group(kWorld);
  std::vector<std::unique_ptr<CudaModelRunner>> ranks(kWorld);
  for (int r = 0; r < kWorld; ++r) {
    CudaRunnerOptions o = GpuOptions();
    o.rank = r;
    o.world_size = kWorld;
    o.make_comm = [&group, r](int, cudaStream_t) -> absl::StatusOr<CudaRunnerOptions::Comm> {
      return CudaRunnerOptions::Comm{std::make_unique<testing::HostStagedGroup::Rank>(&group, r), nullptr};
    };
    auto made = CudaModelRunner::Create(ModelDir(), o);
    ASSERT_TRUE(made.ok()) << made.status();
    ranks[r] = *std::move(made);
  }
  for (CudaModelRunner* r : {one->get(), ranks[0].get(), ranks[1].get()}) {
    ASSERT_TRUE(r->AllocateKvCache({.num_blocks = 16, .block_size = 16}).ok());
    ASSERT_TRUE(r->SetAdapter(1, all).ok());
    ASSERT_TRUE(r->SetAdapter(2, mlp).ok());
  }
  const int tv = (*one)->shape().tokenizer_vocab_size;
  const std::vector<int32_t> a = Prompt(7, tv, 11), b = Prompt(5, tv, 12), c = Prompt(6, tv, 13);
  const std::vector<int32_t> ta = {0}, tb = {1}, tc = {2};
  StepBatch batch;
  batch.seqs.push_back({.seq_id = 1, .tokens = a, .block_table = ta, .all_logits = true, .adapter_slot = 2});
  batch.seqs.push_back({.seq_id = 2, .tokens = b, .block_table = tb, .all_logits = true, .adapter_slot = 1});
  batch.seqs.push_back({.seq_id = 3, .tokens = c, .block_table = tc, .all_logits = true});
  StepLogits want;
  ASSERT_TRUE((*one)->Step(batch, &want).ok());
  std::vector<StepLogits> got(kWorld);
  std::vector<absl::Status> st(kWorld);
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < kWorld; ++r) threads.emplace_back([&, r] { st[r] = ranks[r]->Step(batch, &got[r]); });
    for (std::thread& t : threads) t.join();
  }
  for (const absl::Status& s : st) ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got[0].data, got[1].data) << "ranks disagree";
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    EXPECT_LT(testing::RelNormError(SeqRows(got[0], i), SeqRows(want, i)), 1e-2);
  }
}

}  // namespace
}  // namespace phi::worker::cuda
