// LoRA on the CPU backend: decode and prefill tokens/s of the base model against the same
// steps with random adapters (rank --rank on all six projections, built in memory), at batch
// 1 (one adapter) and at batch --batch (sequences spread round-robin over --adapters
// adapters; prefill: the --prompt tokens as --batch prompts of prompt / batch tokens), and the
// load time of one adapter (LoadPeftAdapter of a PEFT folder written here, then SetAdapter).
// Base and LoRA runs alternate in every repetition; the table shows medians of tokens/s and
// the median of the per-repetition ratios LoRA / base (the pairs run back to back, so they
// share the machine's drift). Random weights measure speed only.
//
//   phi_lora_bench --model models/phi-1_5-random-bf16 [--weights bf16|f32|int8] [--threads 2]
//                  [--reps 3] [--rank 16] [--adapters 4] [--batch 16] [--decode-steps 16]
//                  [--prompt 512]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench/common/bench_args.h"
#include "bench/common/cpu_model_name.h"
#include "nlohmann/json.hpp"
#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/lora/lora_adapter.h"
#include "tests/unit/worker/model/safetensors_writer.h"

namespace {

using phi::bench::Clock;
using phi::bench::Seconds;
using phi::worker::SequenceStep;
using phi::worker::StepBatch;
using phi::worker::StepLogits;
using phi::worker::cpu::CpuModelRunner;
namespace lora = phi::worker::lora;

constexpr int32_t kBlock = 16;
constexpr int32_t kDecodePrompt = 32;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void Die(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// lora_A / lora_B of every module as PEFT initializes them with init_lora_weights=False
// (both random), scaled so that the delta is about the size of the base layer's output.
std::vector<float> RandomMatrix(int64_t n, float stddev, std::mt19937_64* rng) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(*rng);
  return v;
}

int64_t ModuleIn(lora::LoraModule m, const phi::worker::model::PhiConfig& c) {
  return m == lora::LoraModule::kFc2 ? c.intermediate_size : c.hidden_size;
}
int64_t ModuleOut(lora::LoraModule m, const phi::worker::model::PhiConfig& c) {
  return m == lora::LoraModule::kFc1 ? c.intermediate_size : c.hidden_size;
}

std::shared_ptr<const lora::LoraAdapter> RandomAdapter(const phi::worker::model::PhiConfig& c, int rank,
                                                       uint64_t seed) {
  auto a = std::make_shared<lora::LoraAdapter>();
  a->name = "random-" + std::to_string(seed);
  a->rank = rank;
  a->lora_alpha = 2.0f * static_cast<float>(rank);
  a->dtype = "F32";
  a->layers.resize(static_cast<size_t>(c.num_hidden_layers));
  std::mt19937_64 rng(seed);
  for (auto& layer : a->layers) {
    for (int m = 0; m < lora::kNumLoraModules; ++m) {
      const auto mod = static_cast<lora::LoraModule>(m);
      lora::LoraWeights w;
      w.rank = rank;
      w.in = ModuleIn(mod, c);
      w.out = ModuleOut(mod, c);
      w.scaling = a->lora_alpha / static_cast<float>(rank);
      w.a = RandomMatrix(rank * w.in, 1.0f / std::sqrt(static_cast<float>(w.in)), &rng);
      w.b = RandomMatrix(w.out * rank, 0.01f, &rng);
      layer[static_cast<size_t>(m)] = std::move(w);
    }
  }
  return a;
}

// `adapter` as peft's save_pretrained writes it (F32 tensors, every module of every layer).
void WritePeftFolder(const lora::LoraAdapter& adapter, const std::string& dir) {
  std::filesystem::create_directories(dir);
  nlohmann::json config = {{"peft_type", "LORA"},
                           {"task_type", "CAUSAL_LM"},
                           {"r", adapter.rank},
                           {"lora_alpha", adapter.lora_alpha},
                           {"lora_dropout", 0.0},
                           {"use_rslora", false},
                           {"use_dora", false},
                           {"bias", "none"},
                           {"fan_in_fan_out", false},
                           {"base_model_name_or_path", ""},
                           {"target_modules", {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}}};
  std::ofstream(dir + "/adapter_config.json") << config.dump(2);
  std::vector<phi::worker::model::testing::RawTensor> tensors;
  for (size_t l = 0; l < adapter.layers.size(); ++l) {
    for (int m = 0; m < lora::kNumLoraModules; ++m) {
      const lora::LoraWeights* w = adapter.weights(static_cast<int>(l), static_cast<lora::LoraModule>(m));
      if (w == nullptr) continue;
      const std::string name =
          "base_model.model." + lora::LoraModulePath(static_cast<int>(l), static_cast<lora::LoraModule>(m));
      tensors.push_back(phi::worker::model::testing::F32Tensor(name + ".lora_A.weight", {w->rank, w->in}, w->a));
      tensors.push_back(phi::worker::model::testing::F32Tensor(name + ".lora_B.weight", {w->out, w->rank}, w->b));
    }
  }
  phi::worker::model::testing::WriteSafetensors(dir + "/adapter_model.safetensors", tensors);
}

int32_t TokenId(int64_t i, const CpuModelRunner& r) {
  return static_cast<int32_t>(i % std::min<int64_t>(50000, r.shape().vocab_size));
}

void StepOrDie(CpuModelRunner& r, const StepBatch& b, StepLogits* out) {
  if (absl::Status st = r.Step(b, out); !st.ok()) Die("forward pass", st);
}

// Decode tokens/s of `slots.size()` sequences (sequence i on adapter slot slots[i]) after
// 32-token prompts, over `steps` steps.
double DecodeTokensPerSecond(CpuModelRunner& r, const std::vector<int32_t>& slots, int steps) {
  const int b = static_cast<int>(slots.size());
  const int32_t per_seq_blocks = (kDecodePrompt + steps + kBlock) / kBlock;
  std::vector<std::vector<int32_t>> tables(b), toks(b), next(b, std::vector<int32_t>(1));
  StepBatch pre;
  for (int i = 0; i < b; ++i) {
    for (int32_t k = 0; k < per_seq_blocks; ++k) tables[i].push_back(i * per_seq_blocks + k);
    for (int32_t k = 0; k < kDecodePrompt; ++k) toks[i].push_back(TokenId(i * 7919 + k * 104729, r));
  }
  for (int i = 0; i < b; ++i) {
    pre.seqs.push_back({.seq_id = static_cast<uint64_t>(i), .tokens = toks[i], .block_table = tables[i],
                        .adapter_slot = slots[i]});
  }
  StepLogits out;
  StepOrDie(r, pre, &out);
  const auto t0 = Clock::now();
  for (int s = 0; s < steps; ++s) {
    StepBatch d;
    for (int i = 0; i < b; ++i) {
      const auto row = out.LastRow(i);
      next[i][0] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      d.seqs.push_back({.seq_id = static_cast<uint64_t>(i), .tokens = next[i], .start_pos = kDecodePrompt + s,
                        .block_table = tables[i], .adapter_slot = slots[i]});
    }
    StepOrDie(r, d, &out);
  }
  return static_cast<double>(b) * steps / Seconds(t0, Clock::now());
}

// Prefill tokens/s of one step of `slots.size()` prompts of n / slots.size() tokens each
// (sequence i on adapter slot slots[i]).
double PrefillTokensPerSecond(CpuModelRunner& r, int n, const std::vector<int32_t>& slots) {
  const int b = static_cast<int>(slots.size());
  const int len = n / b;
  const int32_t per_seq_blocks = (len + kBlock - 1) / kBlock;
  std::vector<std::vector<int32_t>> toks(b), tables(b);
  StepBatch batch;
  for (int i = 0; i < b; ++i) {
    for (int k = 0; k < len; ++k) toks[i].push_back(TokenId((i * len + k) * 7919, r));
    tables[i].resize(static_cast<size_t>(per_seq_blocks));
    std::iota(tables[i].begin(), tables[i].end(), i * per_seq_blocks);
    batch.seqs.push_back(
        {.seq_id = static_cast<uint64_t>(i), .tokens = toks[i], .block_table = tables[i], .adapter_slot = slots[i]});
  }
  StepLogits out;
  const auto t0 = Clock::now();
  StepOrDie(r, batch, &out);
  return static_cast<double>(len) * b / Seconds(t0, Clock::now());
}

// One measurement, base against LoRA: tokens/s per repetition.
struct Row {
  std::string name;
  double target;  // the largest slowdown allowed, as a fraction
  std::vector<double> base, lora;
};

}  // namespace

int main(int argc, char** argv) {
  using phi::bench::Flag;
  using phi::bench::IntFlag;
  const std::string model = Flag(argc, argv, "model", "models/phi-1_5-random-bf16");
  const std::string weights = Flag(argc, argv, "weights", "bf16");
  const int threads = IntFlag(argc, argv, "threads", 2, 1);
  const int reps = IntFlag(argc, argv, "reps", 3, 1);
  const int rank = IntFlag(argc, argv, "rank", 16, 1);
  const int num_adapters = IntFlag(argc, argv, "adapters", 4, 1);
  const int batch = IntFlag(argc, argv, "batch", 16, 1);
  const int steps = IntFlag(argc, argv, "decode-steps", 16, 1);
  int prompt = IntFlag(argc, argv, "prompt", 512, 1);
  if (weights != "bf16" && weights != "f32" && weights != "int8") {
    std::fprintf(stderr, "--weights %s: expected bf16, f32 or int8\n", weights.c_str());
    return 2;
  }

  phi::worker::cpu::CpuRunnerOptions opt;
  opt.weights = weights == "f32"    ? phi::worker::cpu::WeightFormat::kF32
                : weights == "int8" ? phi::worker::cpu::WeightFormat::kInt8
                                    : phi::worker::cpu::WeightFormat::kBF16;
  opt.num_threads = threads;
  opt.max_adapter_slots = num_adapters;
  auto created = CpuModelRunner::Create(model, opt);
  if (!created.ok()) Die(model + ": load", created.status());
  CpuModelRunner& r = **created;
  const auto& c = r.config();
  prompt = std::min(prompt, c.max_position_embeddings);
  const int32_t blocks = std::max<int32_t>(batch * ((kDecodePrompt + steps + kBlock) / kBlock),
                                           (prompt + kBlock) / kBlock + batch) + 1;
  if (absl::Status s = r.AllocateKvCache({.num_blocks = blocks, .block_size = kBlock}); !s.ok()) Die("KV cache", s);

  std::vector<std::shared_ptr<const lora::LoraAdapter>> adapters;
  for (int i = 0; i < num_adapters; ++i) {
    adapters.push_back(RandomAdapter(c, rank, 100 + static_cast<uint64_t>(i)));
    if (absl::Status s = r.SetAdapter(i + 1, adapters.back()); !s.ok()) Die("SetAdapter", s);
  }
  std::printf("model %s: %d layers, hidden %d, intermediate %d; weights %s (%s), %d threads; %d random adapters of "
              "rank %d on q, k, v, dense, fc1, fc2 (%.1f MB each as F32)\n",
              model.c_str(), c.num_hidden_layers, c.hidden_size, c.intermediate_size, weights.c_str(),
              r.kernel_name().c_str(), threads, num_adapters, rank, adapters[0]->weight_bytes() / 1e6);

  // Load time: the PEFT folder read and checked, then sliced and packed into a slot.
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("phi_lora_bench_" + std::to_string(getpid()))).string();
  WritePeftFolder(*adapters[0], dir);
  lora::LoraLimits limits;
  limits.max_rank = std::max(64, rank);

  const std::vector<int32_t> one = {1}, base_one = {0};
  std::vector<int32_t> mixed(static_cast<size_t>(batch)), base_mixed(static_cast<size_t>(batch), 0);
  for (int i = 0; i < batch; ++i) mixed[static_cast<size_t>(i)] = 1 + i % num_adapters;
  (void)DecodeTokensPerSecond(r, one, 2);  // warm-up: page in weights, grow buffers
  (void)DecodeTokensPerSecond(r, mixed, 2);

  std::vector<Row> rows = {
      {"decode, batch 1 (1 adapter)", 0.10, {}, {}},
      {"decode, batch " + std::to_string(batch) + " (" + std::to_string(num_adapters) + " adapters)", 0.20, {}, {}},
      {"prefill " + std::to_string(prompt) + ", batch 1 (1 adapter)", 0.10, {}, {}},
      {"prefill " + std::to_string(prompt / batch * batch) + " as " + std::to_string(batch) + " x " +
           std::to_string(prompt / batch) + " (" + std::to_string(num_adapters) + " adapters)",
       0.20, {}, {}},
  };
  std::vector<double> load_ms, set_ms;
  for (int rep = 0; rep < reps; ++rep) {
    rows[0].base.push_back(DecodeTokensPerSecond(r, base_one, steps));
    rows[0].lora.push_back(DecodeTokensPerSecond(r, one, steps));
    rows[1].base.push_back(DecodeTokensPerSecond(r, base_mixed, steps));
    rows[1].lora.push_back(DecodeTokensPerSecond(r, mixed, steps));
    rows[2].base.push_back(PrefillTokensPerSecond(r, prompt, base_one));
    rows[2].lora.push_back(PrefillTokensPerSecond(r, prompt, one));
    rows[3].base.push_back(PrefillTokensPerSecond(r, prompt, base_mixed));
    rows[3].lora.push_back(PrefillTokensPerSecond(r, prompt, mixed));
    const auto t0 = Clock::now();
    auto loaded = lora::LoadPeftAdapter("bench", dir, c, limits);
    const auto t1 = Clock::now();
    if (!loaded.ok()) Die("LoadPeftAdapter " + dir, loaded.status());
    if (absl::Status s = r.SetAdapter(1, *loaded); !s.ok()) Die("SetAdapter", s);
    const auto t2 = Clock::now();
    load_ms.push_back(1e3 * Seconds(t0, t1));
    set_ms.push_back(1e3 * Seconds(t1, t2));
    for (const Row& row : rows) {
      std::fprintf(stderr, "rep %d: %s: base %.2f, LoRA %.2f tok/s\n", rep, row.name.c_str(), row.base.back(),
                   row.lora.back());
    }
    std::fprintf(stderr, "rep %d: load %.1f ms + SetAdapter %.1f ms\n", rep, load_ms.back(), set_ms.back());
  }
  std::filesystem::remove_all(dir);

  std::printf("\nCPU: %s, %d threads; kernels %s\n\n", phi::bench::CpuModelName().c_str(), threads,
              r.kernel_name().c_str());
  std::printf("| measurement (median of %d) | base tok/s | LoRA tok/s | slower by | target |\n|---|---|---|---|---|\n",
              reps);
  for (const Row& row : rows) {
    std::vector<double> ratios;
    for (size_t i = 0; i < row.base.size(); ++i) ratios.push_back(row.lora[i] / row.base[i]);
    const double slower = 1.0 - Median(ratios);
    const double b = Median(row.base), l = Median(row.lora);
    std::printf("| %s | %.2f | %.2f | %.1f%% | <= %.0f%% %s |\n", row.name.c_str(), b, l, 100.0 * slower,
                100.0 * row.target, slower <= row.target ? "met" : "MISSED");
  }
  const double total = Median(load_ms) + Median(set_ms);
  std::printf("\n| adapter load (median of %d) | LoadPeftAdapter | SetAdapter | total | target |\n"
              "|---|---|---|---|---|\n"
              "| rank %d, six modules, F32 (%.1f MB) | %.1f ms | %.1f ms | %.1f ms | <= 100 ms %s |\n",
              reps, rank, adapters[0]->weight_bytes() / 1e6, Median(load_ms), Median(set_ms), total,
              total <= 100.0 ? "met" : "MISSED");
  return 0;
}
