// LoRA adapters on the CPU runner (cpu_lora.h), on a tiny random Phi model (F32 on disk, run
// with F32, BF16 and INT8 weights): an adapter whose B is zero leaves the logits bit for bit;
// a batch mixing three adapters and the base (prefill chunks and decodes) gives each sequence
// bit for bit what it gets alone, on every kernel path the host runs; the adapter equals the
// base with W + scaling B A merged in; a tensor-parallel group of 2 (ranks as threads) equals
// one rank; bad slots and adapters are refused.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "services/common/status_macros.h"
#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/model/phi_checkpoint.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/model/shard_spec.h"
#include "tests/unit/worker/model/safetensors_writer.h"

#ifndef PHI_CPU_LORA_MODEL_DIR
#error "PHI_CPU_LORA_MODEL_DIR must name the model folder tools/make_model.py writes"
#endif

namespace phi::worker::cpu {
namespace {

using lora::LoraAdapter;
using lora::LoraModule;
using lora::LoraWeights;
using worker::SequenceStep;
using worker::StepBatch;
using worker::StepLogits;

const std::string kModelDir = PHI_CPU_LORA_MODEL_DIR;
constexpr int32_t kBlockSize = 16;

model::PhiConfig Config() {
  auto ck = model::PhiCheckpoint::Open(kModelDir);
  EXPECT_TRUE(ck.ok()) << ck.status();
  return (*ck)->config();
}

// A random adapter of `rank` on `modules` (all layers). B is zero when `zero_b` (PEFT's own
// initialization: the adapter starts as the base model).
std::shared_ptr<const LoraAdapter> RandomAdapter(const model::PhiConfig& c, std::string name, int32_t rank,
                                                 float alpha, const std::vector<LoraModule>& modules, uint64_t seed,
                                                 bool zero_b = false) {
  auto a = std::make_shared<LoraAdapter>();
  a->name = std::move(name);
  a->rank = rank;
  a->lora_alpha = alpha;
  a->dtype = "F32";
  a->layers.resize(static_cast<size_t>(c.num_hidden_layers));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  for (auto& layer : a->layers) {
    for (LoraModule m : modules) {
      LoraWeights w;
      w.rank = rank;
      w.scaling = alpha / static_cast<float>(rank);
      w.in = m == LoraModule::kFc2 ? I : H;
      w.out = m == LoraModule::kFc1 ? I : H;
      w.a.resize(static_cast<size_t>(rank * w.in));
      w.b.resize(static_cast<size_t>(w.out * rank));
      // |A x| ~ 0.1 sqrt(in), |scaling B A x| about the size of the base layer's output.
      for (float& v : w.a) v = 0.1f * dist(rng);
      for (float& v : w.b) v = zero_b ? 0.0f : 0.03f * dist(rng);
      layer[static_cast<size_t>(m)] = std::move(w);
    }
  }
  return a;
}

const std::vector<LoraModule> kAllModules = {LoraModule::kQ,     LoraModule::kK,   LoraModule::kV,
                                             LoraModule::kDense, LoraModule::kFc1, LoraModule::kFc2};

std::unique_ptr<CpuModelRunner> MakeRunner(const std::string& dir, WeightFormat weights, int32_t slots,
                                           parallel::Communicator* comm = nullptr, int threads = 2,
                                           KernelPath kernel = KernelPath::kAuto) {
  CpuRunnerOptions o;
  o.kernel = kernel;
  o.weights = weights;
  o.num_threads = threads;
  o.max_adapter_slots = slots;
  o.comm = comm;
  auto r = CpuModelRunner::Create(dir, o);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_TRUE((*r)->AllocateKvCache({.num_blocks = 64, .block_size = kBlockSize}).ok());
  return std::move(*r);
}

// One sequence's plan: chunk[k] new tokens at step k (0: not in that step).
struct SeqPlan {
  uint64_t id = 0;
  int32_t slot = 0;
  std::vector<int32_t> tokens;
  std::vector<int32_t> chunks;
  std::vector<int32_t> blocks;
};

SeqPlan Plan(uint64_t id, int32_t slot, std::vector<int32_t> chunks, int32_t first_block, uint64_t seed) {
  SeqPlan p;
  p.id = id;
  p.slot = slot;
  p.chunks = std::move(chunks);
  int32_t n = 0;
  for (int32_t c : p.chunks) n += c;
  std::mt19937_64 rng(seed);
  for (int32_t i = 0; i < n; ++i) p.tokens.push_back(static_cast<int32_t>(rng() % 2000));
  for (int32_t b = 0; b * kBlockSize < n; ++b) p.blocks.push_back(first_block + b);
  return p;
}

// logits[s][k]: the rows (every token's, all_logits) of plan s at step k (empty when absent).
using PlanLogits = std::vector<std::vector<std::vector<float>>>;

// Runs `plans` together, one batch per step, in the plans' order.
PlanLogits RunTogether(CpuModelRunner& r, const std::vector<SeqPlan>& plans) {
  size_t steps = 0;
  for (const auto& p : plans) steps = std::max(steps, p.chunks.size());
  PlanLogits out(plans.size(), std::vector<std::vector<float>>(steps));
  std::vector<int32_t> done(plans.size(), 0);
  for (size_t k = 0; k < steps; ++k) {
    StepBatch batch;
    std::vector<size_t> who;
    for (size_t s = 0; s < plans.size(); ++s) {
      const SeqPlan& p = plans[s];
      if (k >= p.chunks.size() || p.chunks[k] == 0) continue;
      SequenceStep st;
      st.seq_id = p.id;
      st.tokens = std::span<const int32_t>(p.tokens).subspan(static_cast<size_t>(done[s]),
                                                             static_cast<size_t>(p.chunks[k]));
      st.start_pos = done[s];
      st.block_table = p.blocks;
      st.all_logits = true;
      st.adapter_slot = p.slot;
      batch.seqs.push_back(st);
      who.push_back(s);
      done[s] += p.chunks[k];
    }
    if (batch.seqs.empty()) continue;
    StepLogits logits;
    const absl::Status status = r.Step(batch, &logits);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) return out;
    for (size_t i = 0; i < who.size(); ++i) {
      const auto first = logits.data.begin() + static_cast<std::ptrdiff_t>(logits.first_row[i]) * logits.vocab_size;
      out[who[i]][k].assign(first, first + static_cast<std::ptrdiff_t>(logits.num_rows[i]) * logits.vocab_size);
    }
  }
  return out;
}

void ExpectBitEqual(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what << ": not bit for bit equal";
}

// max |a - b| / max |b|.
double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

const WeightFormat kFormats[] = {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kInt8};

TEST(CpuLoraTest, ZeroBLeavesTheBaseBitForBit) {
  const model::PhiConfig c = Config();
  for (WeightFormat f : kFormats) {
    SCOPED_TRACE(std::string(WeightFormatName(f)));
    auto r = MakeRunner(kModelDir, f, 2);
    ASSERT_NE(r, nullptr);
    ASSERT_TRUE(r->SetAdapter(2, RandomAdapter(c, "zero", 8, 16, kAllModules, 1, /*zero_b=*/true)).ok());
    const std::vector<int32_t> chunks = {13, 1, 1};
    const PlanLogits base = RunTogether(*r, {Plan(1, 0, chunks, 0, 7)});
    const PlanLogits zero = RunTogether(*r, {Plan(1, 2, chunks, 0, 7)});
    for (size_t k = 0; k < chunks.size(); ++k) ExpectBitEqual(zero[0][k], base[0][k], "step " + std::to_string(k));
  }
}

// The kernel paths this host runs (each is batch-invariant on its own).
std::vector<std::pair<KernelPath, Isa>> HostPaths() {
  std::vector<std::pair<KernelPath, Isa>> paths;
  for (auto [path, isa] :
       {std::pair{KernelPath::kAvx512Bf16, Isa::kAvx512Bf16}, std::pair{KernelPath::kAvx512, Isa::kAvx512},
        std::pair{KernelPath::kAvx2, Isa::kAvx2}, std::pair{KernelPath::kPortable, Isa::kPortable}}) {
    if (CpuSupports(isa)) paths.emplace_back(path, isa);
  }
  return paths;
}

TEST(CpuLoraTest, MixedBatchEqualsEachSequenceAlone) {
  const model::PhiConfig c = Config();
  for (auto [path, isa] : HostPaths()) {
    for (WeightFormat f : kFormats) {
      SCOPED_TRACE(std::string(IsaName(isa)) + " " + std::string(WeightFormatName(f)));
      auto r = MakeRunner(kModelDir, f, 3, nullptr, 2, path);
      ASSERT_NE(r, nullptr);
      ASSERT_TRUE(r->SetAdapter(1, RandomAdapter(c, "all", 8, 16, kAllModules, 11)).ok());
      ASSERT_TRUE(r->SetAdapter(2, RandomAdapter(c, "qv", 4, 8, {LoraModule::kQ, LoraModule::kV}, 12)).ok());
      const std::vector<LoraModule> mlp = {LoraModule::kFc1, LoraModule::kFc2, LoraModule::kDense};
      ASSERT_TRUE(r->SetAdapter(3, RandomAdapter(c, "mlp", 16, 16, mlp, 13)).ok());
      // Batch order mixes the slots; sequences join and leave; prefill chunks beside decodes.
      const std::vector<SeqPlan> plans = {
          Plan(10, 2, {16, 16, 5, 1, 1}, 0, 21),     //
          Plan(11, 0, {7, 1, 1, 1, 1}, 4, 22),       //
          Plan(12, 1, {20, 1, 1, 1}, 8, 23),         //
          Plan(13, 3, {0, 3, 1, 9, 1}, 12, 24),      //
          Plan(14, 1, {0, 0, 11, 1, 1}, 16, 25),     //
          Plan(15, 1, {1, 1, 1, 1, 1}, 20, 26),      //
      };
      const PlanLogits together = RunTogether(*r, plans);
      for (size_t s = 0; s < plans.size(); ++s) {
        const PlanLogits alone = RunTogether(*r, {plans[s]});
        for (size_t k = 0; k < plans[s].chunks.size(); ++k) {
          ExpectBitEqual(together[s][k], alone[0][k],
                         "sequence " + std::to_string(plans[s].id) + " step " + std::to_string(k));
        }
      }
      // The adapters change the logits (the same tokens on the base differ).
      SeqPlan on_base = plans[2];
      on_base.slot = 0;
      EXPECT_GT(RelativeError(RunTogether(*r, {on_base})[0][0], together[2][0]), 1e-3);
    }
  }
}

// `model_dir` copied to `out_dir` with W + scaling B A (computed in double) merged into the
// weights `adapter` targets, every tensor F32.
absl::Status WriteMergedModel(const std::string& model_dir, const LoraAdapter& adapter, const std::string& out_dir) {
  namespace fs = std::filesystem;
  fs::remove_all(out_dir);
  fs::create_directories(out_dir);
  for (const auto& e : fs::directory_iterator(model_dir)) {
    if (e.path().extension() != ".safetensors") fs::copy_file(e.path(), fs::path(out_dir) / e.path().filename());
  }
  PHI_ASSIGN_OR_RETURN(auto ck, model::PhiCheckpoint::Open(model_dir));
  std::vector<model::testing::RawTensor> tensors;
  for (const model::PhiTensorSpec& spec : model::PhiTensorSpecs(ck->config())) {
    PHI_ASSIGN_OR_RETURN(std::vector<float> w, ck->ReadF32(spec.name));
    for (int l = 0; l < ck->config().num_hidden_layers; ++l) {
      for (int m = 0; m < lora::kNumLoraModules; ++m) {
        const LoraWeights* lw = adapter.weights(l, static_cast<LoraModule>(m));
        if (lw == nullptr || spec.name != lora::LoraModulePath(l, static_cast<LoraModule>(m)) + ".weight") continue;
        for (int64_t o = 0; o < lw->out; ++o) {
          for (int64_t i = 0; i < lw->in; ++i) {
            double d = 0;
            for (int64_t k = 0; k < lw->rank; ++k) {
              d += static_cast<double>(lw->b[o * lw->rank + k]) * lw->a[k * lw->in + i];
            }
            float& x = w[static_cast<size_t>(o * lw->in + i)];
            x = static_cast<float>(x + static_cast<double>(lw->scaling) * d);
          }
        }
      }
    }
    tensors.push_back(model::testing::F32Tensor(spec.name, spec.shape, w));
  }
  model::testing::WriteSafetensors(out_dir + "/model.safetensors", tensors);
  return absl::OkStatus();
}

// The unmerged adapter against the base model with W + scaling B A merged into its F32
// weights: the same model up to F32 rounding.
TEST(CpuLoraTest, EqualsTheMergedWeights) {
  const model::PhiConfig c = Config();
  const std::vector<std::shared_ptr<const LoraAdapter>> adapters = {
      RandomAdapter(c, "all", 16, 32, kAllModules, 31),
      RandomAdapter(c, "attn", 8, 8, {LoraModule::kK, LoraModule::kDense}, 32),
      RandomAdapter(c, "mlp", 4, 16, {LoraModule::kFc1, LoraModule::kFc2}, 33),
  };
  auto r = MakeRunner(kModelDir, WeightFormat::kF32, 1);
  ASSERT_NE(r, nullptr);
  const std::string root = ::testing::TempDir() + "/cpu_lora_merged";
  for (const auto& adapter : adapters) {
    SCOPED_TRACE(adapter->name);
    const std::string dir = root + "_" + adapter->name;
    const absl::Status written = WriteMergedModel(kModelDir, *adapter, dir);
    ASSERT_TRUE(written.ok()) << written;
    auto merged = MakeRunner(dir, WeightFormat::kF32, 0);
    ASSERT_NE(merged, nullptr);
    ASSERT_TRUE(r->SetAdapter(1, adapter).ok());
    const SeqPlan plan = Plan(1, 1, {24, 1, 1, 1}, 0, 41);
    SeqPlan base_plan = plan;
    base_plan.slot = 0;
    const PlanLogits got = RunTogether(*r, {plan});
    const PlanLogits want = RunTogether(*merged, {base_plan});
    const PlanLogits base = RunTogether(*r, {base_plan});
    for (size_t k = 0; k < plan.chunks.size(); ++k) {
      EXPECT_LT(RelativeError(got[0][k], want[0][k]), 1e-5) << "step " << k;
      EXPECT_GT(RelativeError(base[0][k], want[0][k]), 1e-3) << "step " << k << ": the adapter changes nothing";
    }
    std::filesystem::remove_all(dir);
  }
}

// Ranks as threads: all-reduce and all-gather through a shared buffer, summed in rank order.
struct Shared {
  explicit Shared(int n) : n(n), sync(n) {}
  int n;
  std::barrier<> sync;
  std::vector<char> buf;
};

class ThreadCommunicator final : public parallel::Communicator {
 public:
  ThreadCommunicator(Shared* shared, int rank) : shared_(shared), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return shared_->n; }
  std::string name() const override { return "threads"; }
  absl::Status AllReduceSum(void* data, size_t count, parallel::DataType dtype) override {
    if (dtype != parallel::DataType::kFloat32) return absl::UnimplementedError("float32 only");
    std::vector<char> all(count * sizeof(float) * shared_->n);
    PHI_RETURN_IF_ERROR(AllGather(data, all.data(), count * sizeof(float)));
    const float* in = reinterpret_cast<const float*>(all.data());
    float* out = static_cast<float*>(data);
    for (size_t i = 0; i < count; ++i) {
      float s = in[i];
      for (int r = 1; r < shared_->n; ++r) s += in[r * count + i];
      out[i] = s;
    }
    return absl::OkStatus();
  }
  using Communicator::AllReduceSum;
  absl::Status Broadcast(void*, size_t, int) override { return absl::UnimplementedError("test"); }
  absl::Status Barrier() override {
    shared_->sync.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status AllGather(const void* in, void* out, size_t bytes) override {
    if (rank_ == 0) shared_->buf.assign(bytes * shared_->n, 0);
    shared_->sync.arrive_and_wait();
    std::memcpy(shared_->buf.data() + rank_ * bytes, in, bytes);
    shared_->sync.arrive_and_wait();
    std::memcpy(out, shared_->buf.data(), bytes * shared_->n);
    shared_->sync.arrive_and_wait();
    return absl::OkStatus();
  }

 private:
  Shared* shared_;
  int rank_;
};

TEST(CpuLoraTest, TensorParallelGroupOfTwoEqualsOneRank) {
  const model::PhiConfig c = Config();
  const auto all = RandomAdapter(c, "all", 8, 16, kAllModules, 51);
  const auto mlp = RandomAdapter(c, "mlp", 4, 8, {LoraModule::kFc1, LoraModule::kDense}, 52);
  const std::vector<SeqPlan> plans = {Plan(1, 1, {12, 1, 1}, 0, 61), Plan(2, 0, {5, 1, 1}, 4, 62),
                                      Plan(3, 2, {9, 1, 1}, 8, 63)};
  auto one = MakeRunner(kModelDir, WeightFormat::kF32, 2, nullptr, 1);
  ASSERT_NE(one, nullptr);
  ASSERT_TRUE(one->SetAdapter(1, all).ok());
  ASSERT_TRUE(one->SetAdapter(2, mlp).ok());
  const PlanLogits want = RunTogether(*one, plans);

  constexpr int kRanks = 2;
  Shared shared(kRanks);
  std::vector<PlanLogits> got(kRanks);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kRanks; ++rank) {
    threads.emplace_back([&, rank] {
      ThreadCommunicator comm(&shared, rank);
      auto r = MakeRunner(kModelDir, WeightFormat::kF32, 2, &comm, 1);
      if (r == nullptr) std::abort();  // the other rank would wait in a collective forever
      if (!r->SetAdapter(1, all).ok() || !r->SetAdapter(2, mlp).ok()) std::abort();
      got[rank] = RunTogether(*r, plans);
    });
  }
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < kRanks; ++rank) {
    for (size_t s = 0; s < plans.size(); ++s) {
      for (size_t k = 0; k < plans[s].chunks.size(); ++k) {
        EXPECT_LT(RelativeError(got[rank][s][k], want[s][k]), 1e-5)
            << "rank " << rank << " sequence " << plans[s].id << " step " << k;
      }
    }
  }
}

TEST(CpuLoraTest, RefusesBadSlotsAndAdapters) {
  const model::PhiConfig c = Config();
  const auto adapter = RandomAdapter(c, "all", 4, 8, kAllModules, 71);
  auto none = MakeRunner(kModelDir, WeightFormat::kF32, 0);
  ASSERT_NE(none, nullptr);
  EXPECT_EQ(none->max_adapter_slots(), 0);
  EXPECT_EQ(none->SetAdapter(1, adapter).code(), absl::StatusCode::kFailedPrecondition);

  auto r = MakeRunner(kModelDir, WeightFormat::kF32, 2);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->max_adapter_slots(), 2);
  EXPECT_EQ(r->SetAdapter(0, adapter).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status past = r->SetAdapter(3, adapter);
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(past.message().find("[1, 2]"), std::string::npos) << past;

  // An adapter made for another model: wrong width, wrong layer count.
  model::PhiConfig wider = c;
  wider.hidden_size *= 2;
  const absl::Status width = r->SetAdapter(1, RandomAdapter(wider, "wide", 4, 8, {LoraModule::kV}, 72));
  EXPECT_EQ(width.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(width.message().find("v_proj"), std::string::npos) << width;
  model::PhiConfig deeper = c;
  deeper.num_hidden_layers += 1;
  EXPECT_EQ(r->SetAdapter(1, RandomAdapter(deeper, "deep", 4, 8, {LoraModule::kQ}, 73)).code(),
            absl::StatusCode::kInvalidArgument);
  // Under tensor parallelism too, before slicing (SetAdapter makes no collective call).
  Shared shared(2);
  ThreadCommunicator comm(&shared, 1);
  auto rank1 = MakeRunner(kModelDir, WeightFormat::kF32, 1, &comm, 1);
  ASSERT_NE(rank1, nullptr);
  const absl::Status sliced = rank1->SetAdapter(1, RandomAdapter(wider, "wide", 4, 8, {LoraModule::kFc2}, 74));
  EXPECT_EQ(sliced.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(sliced.message().find("fc2"), std::string::npos) << sliced;

  // Steps naming a slot out of range or an empty one.
  const std::vector<int32_t> tokens = {1, 2, 3}, blocks = {0};
  auto step = [&](int32_t slot) {
    StepBatch batch;
    batch.seqs.push_back({.seq_id = 77, .tokens = tokens, .block_table = blocks, .adapter_slot = slot});
    StepLogits out;
    return r->Step(batch, &out);
  };
  for (int32_t slot : {-1, 3, 1}) {
    const absl::Status s = step(slot);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << slot;
    EXPECT_NE(s.message().find("sequence 77"), std::string::npos) << s;
  }
  ASSERT_TRUE(r->SetAdapter(1, adapter).ok());
  EXPECT_TRUE(step(1).ok());
  ASSERT_TRUE(r->SetAdapter(1, nullptr).ok());  // emptied
  EXPECT_EQ(step(1).code(), absl::StatusCode::kInvalidArgument);

  CpuRunnerOptions o;
  o.max_adapter_slots = -1;
  EXPECT_EQ(CpuModelRunner::Create(kModelDir, o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace phi::worker::cpu
