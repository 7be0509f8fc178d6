// LoRA adapters on the CPU backend against peft's PeftModel (golden data from
// make_lora_oracle.py), in F32: logits within 1e-4 relative and greedy continuations equal token
// for token (BF16 weights: logits within 2e-2), for ranks 1, 8 and 64, all six / attention /
// MLP modules, use_rslora on and off and F32/F16/BF16 adapter files; a batch mixing three
// adapters and the base gives each sequence exactly (bit for bit) what it gets alone; a
// tensor-parallel group of two ranks (threads) equals one rank; through the engine, four
// adapters sharing two runner slots give PeftModel's tokens; and phi-merge-lora's merged model
// equals peft's merge_and_unload weights and serves the adapter's logits without it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/engine/engine.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/model/dtype.h"
#include "services/worker/model/safetensors.h"
#include "services/worker/model/tensor_store.h"
#include "tests/conformance/lora/thread_communicator.h"
#include "tests/unit/worker/engine/engine_test_util.h"
#include "tools/merge_lora/merge_lora.h"

#ifndef PHI_LORA_ORACLE_DIR
#error "PHI_LORA_ORACLE_DIR must name the folder make_lora_oracle.py writes"
#endif

namespace phi::worker::cpu {
namespace {

using worker::SequenceStep;
using worker::StepBatch;
using worker::StepLogits;

constexpr int32_t kBlockSize = 16;
constexpr int32_t kNumBlocks = 256;
constexpr int32_t kSlots = 4;

struct Prompt {
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [L, V], PeftModel's
  std::vector<int32_t> greedy;
};

template <typename T>
std::vector<T> ReadTensor(const model::SafetensorsFile& f, const std::string& name) {
  const auto* t = f.Find(name);
  if (t == nullptr) {
    ADD_FAILURE() << f.path() << " lacks " << name;
    return {};
  }
  std::vector<T> out(static_cast<size_t>(t->NumElements()));
  std::memcpy(out.data(), f.Data(*t), out.size() * sizeof(T));
  return out;
}

std::vector<Prompt> LoadGolden(const std::string& adapter_dir) {
  auto f = model::SafetensorsFile::Open(adapter_dir + "/golden.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  std::vector<Prompt> out;
  if (!f.ok()) return out;
  for (int i = 0; (*f)->Find("prompt" + std::to_string(i) + ".ids") != nullptr; ++i) {
    const std::string p = "prompt" + std::to_string(i);
    out.push_back({ReadTensor<int32_t>(**f, p + ".ids"), ReadTensor<float>(**f, p + ".logits"),
                   ReadTensor<int32_t>(**f, p + ".greedy")});
  }
  return out;
}

// ||a - b|| / ||b||
double RelErr(const float* a, const float* b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    d += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    r += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d) / std::sqrt(r);
}
double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return RelErr(a.data(), b.data(), std::min(a.size(), b.size()));
}

int32_t Argmax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// One sequence's KV blocks, handed out in reverse so the table is not the identity.
std::vector<int32_t> Blocks(int32_t first, int32_t count) {
  std::vector<int32_t> b(static_cast<size_t>(count));
  for (int32_t i = 0; i < count; ++i) b[static_cast<size_t>(i)] = first + count - 1 - i;
  return b;
}
int32_t BlocksFor(size_t tokens) { return static_cast<int32_t>((tokens + kBlockSize - 1) / kBlockSize); }

std::string ModelDir(const std::string& model) { return std::string(PHI_LORA_ORACLE_DIR) + "/" + model; }
std::string AdapterDir(const std::string& model, const std::string& adapter) {
  return ModelDir(model) + "/adapters/" + adapter;
}

absl::StatusOr<std::unique_ptr<CpuModelRunner>> MakeRunner(const std::string& dir,
                                                            parallel::Communicator* comm = nullptr,
                                                            WeightFormat weights = WeightFormat::kF32,
                                                            int32_t slots = kSlots) {
  CpuRunnerOptions opt;
  opt.weights = weights;
  opt.max_adapter_slots = slots;
  opt.comm = comm;
  auto r = CpuModelRunner::Create(dir, opt);
  if (!r.ok()) return r.status();
  absl::Status s = (*r)->AllocateKvCache({kNumBlocks, kBlockSize});
  if (!s.ok()) return s;
  return r;
}

absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>> Load(const std::string& model, const std::string& adapter,
                                                              const CpuModelRunner& runner) {
  return lora::LoadPeftAdapter(adapter, AdapterDir(model, adapter), runner.config(), lora::LoraLimits{});
}

// Every prompt position's logits of one sequence in `slot`, as one prefill.
StepLogits Prefill(ModelRunner& runner, const std::vector<int32_t>& ids, int32_t slot, int32_t first_block) {
  const auto blocks = Blocks(first_block, BlocksFor(ids.size()));
  StepBatch b;
  SequenceStep s{1, ids, 0, blocks, /*all_logits=*/true};
  s.adapter_slot = slot;
  b.seqs.push_back(s);
  StepLogits out;
  absl::Status st = runner.Step(b, &out);
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

// make_lora_oracle.py's MODEL_ADAPTERS.
struct Param {
  std::string model, adapter;
};
std::vector<Param> Params() {
  std::vector<Param> ps;
  for (const char* a : {"r1_all_f32", "r8_attention_bf16_rslora", "r64_mlp_f16", "r8_all_f16_rslora"}) {
    ps.push_back({"h64_a4", a});
  }
  for (const char* a : {"r1_all_f32", "r8_attention_bf16_rslora", "r64_mlp_f16"}) ps.push_back({"h96_a6_sharded", a});
  for (const char* a : {"r8_all_f16_rslora", "r64_mlp_f16"}) ps.push_back({"make_model_bf16", a});
  ps.push_back({"make_model_f16", "r8_attention_bf16_rslora"});
  return ps;
}
std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return info.param.model + "_" + info.param.adapter;
}
void PrintTo(const Param& p, std::ostream* os) { *os << p.model << "/" << p.adapter; }

class LoraOracleTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    auto r = MakeRunner(ModelDir(GetParam().model));
    ASSERT_TRUE(r.ok()) << r.status();
    runner_ = std::move(*r);
    auto a = Load(GetParam().model, GetParam().adapter, *runner_);
    ASSERT_TRUE(a.ok()) << a.status();
    adapter_ = *a;
    ASSERT_TRUE(runner_->SetAdapter(1, adapter_).ok());
    prompts_ = LoadGolden(AdapterDir(GetParam().model, GetParam().adapter));
    ASSERT_FALSE(prompts_.empty());
  }

  std::unique_ptr<CpuModelRunner> runner_;
  std::shared_ptr<const lora::LoraAdapter> adapter_;
  std::vector<Prompt> prompts_;
};

TEST_P(LoraOracleTest, PromptLogitsMatchPeft) {
  for (size_t i = 0; i < prompts_.size(); ++i) {
    const auto& p = prompts_[i];
    StepLogits with = Prefill(*runner_, p.ids, 1, 0);
    ASSERT_EQ(with.data.size(), p.logits.size());
    const double err = RelErr(with.data, p.logits);
    EXPECT_LE(err, 1e-4) << "prompt " << i << " (" << p.ids.size() << " tokens)";
    // The adapter moves the logits far more than the tolerance: the comparison can fail.
    StepLogits base = Prefill(*runner_, p.ids, 0, 0);
    EXPECT_GT(RelErr(base.data, p.logits), 1e-2) << "prompt " << i << ": the adapter changes nothing";
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.3g", err);
    RecordProperty("prompt" + std::to_string(i) + "_rel_err", buf);
  }
}

TEST_P(LoraOracleTest, GreedyContinuationMatchesPeft) {
  for (size_t i = 0; i < prompts_.size(); ++i) {
    const auto& p = prompts_[i];
    const int32_t L = static_cast<int32_t>(p.ids.size());
    const auto blocks = Blocks(0, BlocksFor(p.ids.size() + p.greedy.size()));
    auto step = [&](const std::vector<int32_t>& tokens, int32_t start) {
      StepBatch b;
      SequenceStep s{1, tokens, start, blocks, false};
      s.adapter_slot = 1;
      b.seqs.push_back(s);
      StepLogits out;
      absl::Status st = runner_->Step(b, &out);
      EXPECT_TRUE(st.ok()) << st;
      return out;
    };
    StepLogits out = step(p.ids, 0);
    std::vector<int32_t> got;
    for (size_t t = 0; t < p.greedy.size() && !out.data.empty(); ++t) {
      got.push_back(Argmax(out.LastRow(0)));
      out = step({got.back()}, L + static_cast<int32_t>(t));
    }
    EXPECT_EQ(got, p.greedy) << "prompt " << i << " (" << L << " tokens)";
  }
}

// phi-merge-lora's output: the adapted weights equal peft's merge_and_unload (in the
// checkpoint's dtype: BF16 merges may differ by one rounding), and the merged model, served
// without an adapter, gives the adapter's logits.
TEST_P(LoraOracleTest, MergedModelMatchesPeftAndUnmerged) {
  const std::string out = ::testing::TempDir() + "/phi_lora_merged_" + GetParam().model + "_" + GetParam().adapter;
  std::filesystem::remove_all(out);
  const std::string adapter_dir = AdapterDir(GetParam().model, GetParam().adapter);
  auto report =
      tools::MergeLoraAdapter({.base_dir = ModelDir(GetParam().model), .adapter_dir = adapter_dir, .out_dir = out});
  ASSERT_TRUE(report.ok()) << report.status();
  auto peft = model::SafetensorsFile::Open(adapter_dir + "/peft_merged.safetensors");
  ASSERT_TRUE(peft.ok()) << peft.status();
  EXPECT_EQ(report->merged_tensors, static_cast<int64_t>((*peft)->tensors().size()));
  auto merged = model::TensorStore::Open(out);
  ASSERT_TRUE(merged.ok()) << merged.status();
  bool half = false;  // a BF16 or F16 checkpoint
  for (const auto& [name, info] : (*peft)->tensors()) {
    auto e = (*merged)->Find(name);
    ASSERT_TRUE(e.ok()) << e.status();
    ASSERT_EQ(e->info->dtype, info.dtype) << name;
    ASSERT_EQ(e->info->shape, info.shape) << name;
    half = info.dtype != model::DType::kF32;
    const int64_t n = info.NumElements();
    std::vector<float> ours(static_cast<size_t>(n)), theirs(static_cast<size_t>(n));
    ASSERT_TRUE((*merged)->Read(name, info.shape, model::Slice::Whole(), model::DType::kF32, ours.data(), n).ok());
    ASSERT_TRUE((*peft)->Data(info) != nullptr);
    const uint8_t* raw = (*peft)->Data(info);
    for (int64_t k = 0; k < n; ++k) {
      float f;
      uint16_t h;
      const int size = model::DTypeSize(info.dtype);
      std::memcpy(info.dtype == model::DType::kF32 ? static_cast<void*>(&f) : &h, raw + k * size, size);
      theirs[k] = info.dtype == model::DType::kF32    ? f
                  : info.dtype == model::DType::kBF16 ? model::Bf16ToF32(h)
                                                      : model::F16ToF32(h);
    }
    // F32: summation order only; BF16 / F16: at most one rounding step (2^-8 / 2^-11) apart.
    // Errors are measured against the tensor's largest value (the rank sums' size).
    double largest = 0, worst = 0;
    for (int64_t k = 0; k < n; ++k) largest = std::max(largest, std::abs(static_cast<double>(theirs[k])));
    for (int64_t k = 0; k < n; ++k) {
      const double allowed = (half ? std::abs(theirs[k]) / 128 : 0) + 1e-5 * largest;
      worst = std::max(worst, std::abs(static_cast<double>(ours[k]) - theirs[k]) / allowed);
    }
    EXPECT_LE(worst, 1.0) << name << ": the largest difference from peft, in units of the tolerance";
  }
  auto served = MakeRunner(out);
  ASSERT_TRUE(served.ok()) << served.status();
  for (size_t i = 0; i < prompts_.size(); ++i) {
    StepLogits m = Prefill(**served, prompts_[i].ids, 0, 0);
    StepLogits u = Prefill(*runner_, prompts_[i].ids, 1, 0);
    EXPECT_LE(RelErr(m.data, u.data), half ? 2e-2 : 1e-4) << "prompt " << i;
  }
  std::filesystem::remove_all(out);
}

// A group of two ranks (threads), each applying its slice of the adapter, equals one rank.
TEST_P(LoraOracleTest, TensorParallelTwoRanksEqualsOne) {
  parallel::testing::ThreadGroup group(2);
  std::vector<StepLogits> rank0(prompts_.size());
  std::vector<absl::Status> status(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      parallel::testing::ThreadCommunicator comm(&group, rank);
      auto r = MakeRunner(ModelDir(GetParam().model), &comm);
      status[rank] = r.ok() ? (*r)->SetAdapter(1, adapter_) : r.status();
      // Both ranks step, or neither: a rank alone would wait for its partner forever.
      const char ok = status[rank].ok(), none = 0;
      char oks[2];
      (void)comm.AllGather(&ok, oks, 1);
      if (oks[0] == none || oks[1] == none) return;
      for (size_t i = 0; i < prompts_.size(); ++i) {
        StepLogits out = Prefill(**r, prompts_[i].ids, 1, 0);
        if (rank == 0) rank0[i] = std::move(out);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(status[0].ok() && status[1].ok()) << status[0] << " / " << status[1];
  for (size_t i = 0; i < prompts_.size(); ++i) {
    StepLogits one = Prefill(*runner_, prompts_[i].ids, 1, 0);
    EXPECT_LE(RelErr(rank0[i].data, one.data), 1e-5) << "prompt " << i;
    EXPECT_LE(RelErr(rank0[i].data, prompts_[i].logits), 1e-4) << "prompt " << i;
  }
}

// BF16 weights (the CPU backend's default) with the adapter in F32: within the BF16 model
// oracle's 2e-2 of PeftModel (tests/conformance/model), and the adapter still applied.
TEST_P(LoraOracleTest, Bf16WeightsPromptLogitsNearPeft) {
  auto r = MakeRunner(ModelDir(GetParam().model), nullptr, WeightFormat::kBF16);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->SetAdapter(1, adapter_).ok());
  for (size_t i = 0; i < prompts_.size(); ++i) {
    const auto& p = prompts_[i];
    StepLogits with = Prefill(**r, p.ids, 1, 0);
    EXPECT_LE(RelErr(with.data, p.logits), 2e-2) << "prompt " << i;
    EXPECT_GT(RelErr(Prefill(**r, p.ids, 0, 0).data, p.logits), 1e-1) << "prompt " << i << ": adapter not applied";
  }
}

INSTANTIATE_TEST_SUITE_P(Peft, LoraOracleTest, ::testing::ValuesIn(Params()), ParamName);

// A batch of the base and three adapters (one of them on two sequences), prefill then decode,
// gives each sequence the bits it gets alone.
TEST(LoraMixedBatchTest, ThreeAdaptersAndBaseEqualEachAlone) {
  const std::string model = "h64_a4";
  auto r = MakeRunner(ModelDir(model));
  ASSERT_TRUE(r.ok()) << r.status();
  CpuModelRunner& runner = **r;
  const std::vector<std::string> names = {"r1_all_f32", "r8_attention_bf16_rslora", "r64_mlp_f16"};
  for (size_t k = 0; k < names.size(); ++k) {
    auto a = Load(model, names[k], runner);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(runner.SetAdapter(static_cast<int32_t>(k + 1), *a).ok());
  }
  const auto prompts = LoadGolden(AdapterDir(model, names[0]));
  ASSERT_GE(prompts.size(), 3u);
  // (slot, prompt): the base first and last, adapter 1 twice, a 1-token prompt among them.
  const std::vector<std::pair<int32_t, size_t>> seqs = {{0, 2}, {1, 1}, {2, 0}, {3, 2}, {1, 2}, {0, 1}};
  std::vector<std::vector<int32_t>> blocks;
  std::vector<StepLogits> alone;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& ids = prompts[seqs[i].second].ids;
    blocks.push_back(Blocks(static_cast<int32_t>(40 * i), BlocksFor(ids.size() + 1)));
    StepBatch b;
    SequenceStep s{i, ids, 0, blocks.back(), true};
    s.adapter_slot = seqs[i].first;
    b.seqs.push_back(s);
    alone.emplace_back();
    ASSERT_TRUE(runner.Step(b, &alone.back()).ok());
  }
  StepBatch together;
  for (size_t i = 0; i < seqs.size(); ++i) {
    SequenceStep s{i, prompts[seqs[i].second].ids, 0, blocks[i], true};
    s.adapter_slot = seqs[i].first;
    together.seqs.push_back(s);
  }
  StepLogits mixed;
  ASSERT_TRUE(runner.Step(together, &mixed).ok());
  const int32_t V = runner.shape().vocab_size;
  for (size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_EQ(mixed.num_rows[i], alone[i].num_rows[0]);
    const float* t = mixed.data.data() + static_cast<size_t>(mixed.first_row[i]) * V;
    EXPECT_EQ(std::memcmp(t, alone[i].data.data(), alone[i].data.size() * sizeof(float)), 0)
        << "sequence " << i << " (slot " << seqs[i].first << ") differs in a batch";
  }
  // Decode: one token each, in one batch and alone.
  std::vector<std::vector<int32_t>> next(seqs.size());
  StepBatch dec;
  for (size_t i = 0; i < seqs.size(); ++i) {
    next[i] = {Argmax(alone[i].LastRow(0))};
    SequenceStep s{i, next[i], static_cast<int32_t>(prompts[seqs[i].second].ids.size()), blocks[i], false};
    s.adapter_slot = seqs[i].first;
    dec.seqs.push_back(s);
  }
  StepLogits batched;
  ASSERT_TRUE(runner.Step(dec, &batched).ok());
  for (size_t i = 0; i < seqs.size(); ++i) {
    StepBatch one;
    one.seqs.push_back(dec.seqs[i]);
    StepLogits solo;
    ASSERT_TRUE(runner.Step(one, &solo).ok());
    EXPECT_EQ(std::memcmp(batched.LastRow(i).data(), solo.LastRow(0).data(), V * sizeof(float)), 0)
        << "decode of sequence " << i << " (slot " << seqs[i].first << ") differs in a batch";
  }
}

// Through the engine with two runner slots for four adapters: concurrent requests of two
// adapters and the base, then the other two (evicting the idle ones), then the first again
// (installed anew) each give PeftModel's 64 greedy tokens; the base gives what it gives alone.
TEST(LoraEngineTest, GreedyThroughTwoSlotsForFourAdaptersMatchesPeft) {
  const std::string model = "h64_a4";
  auto r = MakeRunner(ModelDir(model), nullptr, WeightFormat::kF32, /*slots=*/2);
  ASSERT_TRUE(r.ok()) << r.status();
  metrics::Registry registry;
  worker::EngineOptions o;
  o.num_kv_blocks = kNumBlocks;
  o.block_size = kBlockSize;
  o.registry = &registry;
  auto engine = worker::Engine::Create(r->get(), o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<std::string> names = {"r1_all_f32", "r8_attention_bf16_rslora", "r64_mlp_f16",
                                          "r8_all_f16_rslora"};
  std::vector<std::vector<Prompt>> golden;
  for (const auto& name : names) {
    auto a = Load(model, name, **r);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE((*engine)->AddAdapter(*a).ok());
    golden.push_back(LoadGolden(AdapterDir(model, name)));
    ASSERT_FALSE(golden.back().empty());
  }
  auto request = [&](const std::string& adapter, const std::vector<int32_t>& prompt) {
    worker::GenerationRequest q;
    q.prompt = prompt;
    q.adapter = adapter;
    q.stopping.max_new_tokens = 64;
    q.stopping.ignore_eos = true;
    return q;
  };
  const auto& base_prompt = golden[0].back().ids;
  auto base_alone = worker::testing::RunOne(**engine, request("", base_prompt));
  ASSERT_TRUE(base_alone.ok()) << base_alone.status();
  // Each phase: (adapter index, prompt index) for every request, submitted at once; -1: the base.
  const std::vector<std::vector<std::pair<int, size_t>>> phases = {
      {{0, 0}, {1, 1}, {-1, 0}, {0, 2}}, {{2, 1}, {3, 2}}, {{0, 1}}};
  for (size_t ph = 0; ph < phases.size(); ++ph) {
    std::vector<worker::GenerationRequest> qs;
    for (const auto& [a, p] : phases[ph]) {
      qs.push_back(a < 0 ? request("", base_prompt) : request(names[a], golden[a][p].ids));
    }
    const auto done = worker::testing::RunConcurrently(**engine, qs, {});
    for (size_t i = 0; i < qs.size(); ++i) {
      const auto [a, p] = phases[ph][i];
      ASSERT_TRUE(done[i].last.status.ok()) << "phase " << ph << " request " << i << ": " << done[i].last.status;
      if (a < 0) {
        EXPECT_EQ(done[i].tokens, base_alone->tokens) << "phase " << ph << ": the base beside adapters";
      } else {
        EXPECT_EQ(done[i].tokens, golden[a][p].greedy) << "phase " << ph << ": " << names[a] << " prompt " << p;
      }
    }
    // The phase's adapters hold the two slots; the others were evicted (phase 0: none yet).
    for (const auto& info : (*engine)->Adapters()) {
      bool used = false;
      for (const auto& [a, p] : phases[ph]) used |= a >= 0 && names[a] == info.name;
      if (used) {
        EXPECT_TRUE(info.resident) << "phase " << ph << ": " << info.name;
      } else if (ph == 1) {
        EXPECT_FALSE(info.resident) << "phase " << ph << ": " << info.name;
      }
    }
  }
}

// What LoadPeftAdapter refuses, phi-merge-lora refuses, writing nothing.
TEST(LoraMergeTest, RefusesAnAdapterOfAnotherBaseAndABusyOutput) {
  const std::string out = ::testing::TempDir() + "/phi_lora_merge_refused";
  std::filesystem::remove_all(out);
  auto wrong = tools::MergeLoraAdapter({.base_dir = ModelDir("h96_a6_sharded"),
                                        .adapter_dir = AdapterDir("h64_a4", "r1_all_f32"), .out_dir = out});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument) << wrong.status();
  EXPECT_NE(wrong.status().message().find("base model mismatch"), std::string::npos) << wrong.status();
  EXPECT_FALSE(std::filesystem::exists(out));
  auto low = tools::MergeLoraAdapter({.base_dir = ModelDir("h64_a4"),
                                      .adapter_dir = AdapterDir("h64_a4", "r64_mlp_f16"),
                                      .out_dir = out,
                                      .max_rank = 8});
  EXPECT_EQ(low.status().code(), absl::StatusCode::kInvalidArgument) << low.status();
  EXPECT_FALSE(std::filesystem::exists(out));
  auto onto_base = tools::MergeLoraAdapter(
      {.base_dir = ModelDir("h64_a4"), .adapter_dir = AdapterDir("h64_a4", "r1_all_f32"),
       .out_dir = ModelDir("h64_a4")});
  EXPECT_EQ(onto_base.status().code(), absl::StatusCode::kInvalidArgument) << onto_base.status();
}

}  // namespace
}  // namespace phi::worker::cpu
