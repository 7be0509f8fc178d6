// CPU backend benchmark on a Phi-shaped model: decode tokens/s at batch 1, 4, 16,
// prefill tokens/s for a 512-token prompt, and the machine's memory read bandwidth,
// with decode expressed as a fraction of the bandwidth limit (weight bytes per step /
// bandwidth). Measurements alternate and repeat; the table shows medians, because this
// machine's bandwidth drifts by +-20% over minutes.
//
//   phi_cpu_bench --model models/phi-1_5-random-bf16 [--weights bf16,int8]
//                 [--kernels auto|avx512bf16|avx512|avx2|portable[,...]] [--reps 6]
//                 [--llama-bench BIN] [--llama-batched-bench BIN] [--llama-model BF16.gguf,Q8_0.gguf]
// Every kernel path x weight format listed gets its own runner (the same checkpoint; int8
// quantized at load; named "int8@avx2" when several paths are listed); all of them, and llama.cpp on every GGUF listed, run in turn in every repetition
// (ABAB...), so all see the same bandwidth drift. llama-bench gives llama.cpp's prompt 512
// and 16-token batch-1 decode; llama-batched-bench its decode of 4 and 16 parallel
// sequences (32-token prompts, 16 tokens each: the same work as this engine's batches).
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/common/cpu_model_name.h"
#include "services/worker/backends/cpu/phi_cpu_runner.h"

namespace {

using Clock = std::chrono::steady_clock;
using phi::worker::cpu::CpuModelRunner;
using phi::worker::SequenceStep;
using phi::worker::StepBatch;
using phi::worker::StepLogits;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Read bandwidth: `threads` threads sum disjoint halves of a buffer much larger than L3.
// One pass; MeasureReadBandwidth takes the best of three.
double ReadPass(int threads, size_t bytes) {
  static std::vector<uint64_t> buf;
  if (buf.size() != bytes / 8) {
    buf.assign(bytes / 8, 1);
  }
  std::vector<uint64_t> sums(threads);
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      const size_t n = buf.size() / threads;
      const uint64_t* p = buf.data() + t * n;
      uint64_t acc[8] = {};
      for (size_t i = 0; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; ++l) acc[l] += p[i + l];
      sums[t] = std::accumulate(acc, acc + 8, uint64_t{0});
    });
  }
  for (auto& t : ts) t.join();
  const double s = Seconds(t0, Clock::now());
  if (std::accumulate(sums.begin(), sums.end(), uint64_t{0}) != buf.size() / threads * threads) std::abort();
  return static_cast<double>(bytes) / s;
}

// The best of three passes: a single pass sometimes ran at a fifth of the others here (the
// guest's memory was busy for a moment, e.g. right after llama-bench exited), which made
// "fraction of the limit" meaningless; the best pass is what the memory system can give.
double MeasureReadBandwidth(int threads, size_t bytes) {
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) best = std::max(best, ReadPass(threads, bytes));
  return best;
}

struct Args {
  std::string model = "models/phi-1_5-random-bf16";
  std::vector<std::string> weights = {"bf16"};
  std::vector<std::string> kernels = {"auto"};
  bool int8_bf16_lm_head = false;
  int reps = 5;
  int threads = 2;
  int decode_steps = 16;
  int prompt = 512;
  std::string llama_bench;
  std::string llama_batched_bench;
  std::vector<std::string> llama_models;
};

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--model DIR] [--weights bf16|f32|int8[,...]] [--kernels auto|avx512bf16|avx512|avx2|portable]\n"
               "       [--int8-bf16-lm-head] [--reps N] [--threads N] [--decode-steps N] [--prompt N]\n"
               "       [--llama-bench BIN] [--llama-batched-bench BIN] [--llama-model GGUF[,GGUF...]]\n",
               argv0);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    auto num = [&](int lo) {
      const std::string v = val();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < lo || n > 1000000) {
        std::fprintf(stderr, "%s %s: expected an integer >= %d\n", k.c_str(), v.c_str(), lo);
        std::exit(2);
      }
      return static_cast<int>(n);
    };
    if (k == "--model") a.model = val();
    else if (k == "--weights") a.weights = absl::StrSplit(val(), ',');
    else if (k == "--kernels") a.kernels = absl::StrSplit(val(), ',');
    else if (k == "--int8-bf16-lm-head") a.int8_bf16_lm_head = true;
    else if (k == "--reps") a.reps = num(1);
    else if (k == "--threads") a.threads = num(1);
    else if (k == "--decode-steps") a.decode_steps = num(1);
    else if (k == "--prompt") a.prompt = num(1);
    else if (k == "--portable") a.kernels = {"portable"};
    else if (k == "--llama-bench") a.llama_bench = val();
    else if (k == "--llama-batched-bench") a.llama_batched_bench = val();
    else if (k == "--llama-model") a.llama_models = absl::StrSplit(val(), ',');
    else Usage(argv[0]);
  }
  for (const auto& w : a.weights) {
    if (w != "bf16" && w != "f32" && w != "int8") {
      std::fprintf(stderr, "--weights %s: expected bf16, f32 or int8 (comma-separated)\n", w.c_str());
      std::exit(2);
    }
  }
  phi::worker::cpu::KernelPath kp;
  for (const auto& kn : a.kernels) {
    if (!phi::worker::cpu::ParseKernelPath(kn, &kp)) {
      std::fprintf(stderr, "--kernels %s: expected auto, avx512bf16, avx512, avx2 or portable (comma-separated)\n",
                   kn.c_str());
      std::exit(2);
    }
  }
  return a;
}

std::vector<std::vector<std::string>> ReadTable(const std::string& cmd, char sep) {
  std::vector<std::vector<std::string>> rows;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return rows;
  char line[8192];
  while (std::fgets(line, sizeof(line), p) != nullptr) {
    std::vector<std::string> cells;
    std::string cell;
    bool quoted = false;
    for (const char* c = line; *c != '\0' && *c != '\n'; ++c) {
      if (*c == '"') {
        quoted = !quoted;
      } else if (*c == sep && !quoted) {
        cells.push_back(cell);
        cell.clear();
      } else if (*c != ' ' || sep == ',') {
        cell.push_back(*c);
      }
    }
    cells.push_back(cell);
    rows.push_back(cells);
  }
  pclose(p);
  return rows;
}

int Column(const std::vector<std::string>& header, const char* name) {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return static_cast<int>(i);
  return -1;
}

// Runs llama-bench once; returns {prompt tok/s, decode tok/s} parsed from its CSV, or {0, 0}.
std::pair<double, double> RunLlamaBench(const Args& a, const std::string& gguf) {
  const std::string cmd = a.llama_bench + " -m " + gguf + " -t " + std::to_string(a.threads) + " -p " +
                          std::to_string(a.prompt) + " -n " + std::to_string(a.decode_steps) +
                          " -r 1 -o csv 2>/dev/null";
  const auto rows = ReadTable(cmd, ',');
  if (rows.size() < 2) return {0, 0};
  const int np = Column(rows[0], "n_prompt"), ng = Column(rows[0], "n_gen"), ts = Column(rows[0], "avg_ts");
  if (np < 0 || ng < 0 || ts < 0) return {0, 0};
  double pp = 0, tg = 0;
  for (size_t r = 1; r < rows.size(); ++r) {
    if (rows[r].size() <= static_cast<size_t>(ts)) continue;
    if (std::stoi(rows[r][np]) > 0) pp = std::stod(rows[r][ts]);
    if (std::stoi(rows[r][ng]) > 0) tg = std::stod(rows[r][ts]);
  }
  return {pp, tg};
}

// Runs llama-batched-bench once: decode tokens/s of 4 and 16 parallel sequences (32-token
// prompts, decode_steps tokens each), parsed from its markdown table, or {0, 0}.
std::pair<double, double> RunLlamaBatched(const Args& a, const std::string& gguf) {
  const std::string cmd = a.llama_batched_bench + " -m " + gguf + " -t " + std::to_string(a.threads) +
                          " -c 2048 -b 2048 -ub 512 -npp 32 -ntg " + std::to_string(a.decode_steps) +
                          " -npl 4,16 2>/dev/null";
  const auto rows = ReadTable(cmd, '|');
  int b = -1, tg = -1;
  double d4 = 0, d16 = 0;
  for (const auto& r : rows) {
    if (b < 0) {
      b = Column(r, "B");
      tg = Column(r, "S_TGt/s");
      continue;
    }
    if (tg < 0 || r.size() <= static_cast<size_t>(tg) || r[b].empty() || !std::isdigit(r[b][0])) continue;
    if (std::stoi(r[b]) == 4) d4 = std::stod(r[tg]);
    if (std::stoi(r[b]) == 16) d16 = std::stod(r[tg]);
  }
  return {d4, d16};
}

// Token ids the model has (the tiny presets have small vocabularies).
int32_t TokenId(int64_t i, const CpuModelRunner& r) {
  return static_cast<int32_t>(i % std::min<int64_t>(50000, r.shape().vocab_size));
}

void StepOrDie(CpuModelRunner& r, const StepBatch& b, StepLogits* out) {
  const absl::Status st = r.Step(b, out);
  if (!st.ok()) {
    std::fprintf(stderr, "forward pass failed: %s\n", st.ToString().c_str());
    std::exit(1);
  }
}

// Decode throughput at batch b: prefill b short prompts, then time decode steps.
double DecodeTokensPerSecond(CpuModelRunner& r, int b, int steps, int32_t block_size) {
  const int32_t prompt = 32;
  const int32_t per_seq_blocks = (prompt + steps + block_size) / block_size;
  std::vector<std::vector<int32_t>> tables(b), toks(b);
  for (int i = 0; i < b; ++i) {
    for (int32_t k = 0; k < per_seq_blocks; ++k) tables[i].push_back(i * per_seq_blocks + k);
    for (int32_t k = 0; k < prompt; ++k) toks[i].push_back(TokenId(i * 7919 + k * 104729, r));
  }
  StepBatch pre;
  for (int i = 0; i < b; ++i) pre.seqs.push_back(SequenceStep{static_cast<uint64_t>(i), toks[i], 0, tables[i], false});
  StepLogits out;
  StepOrDie(r, pre, &out);
  std::vector<std::vector<int32_t>> next(b, std::vector<int32_t>(1));
  auto t0 = Clock::now();
  for (int s = 0; s < steps; ++s) {
    StepBatch d;
    for (int i = 0; i < b; ++i) {
      const auto row = out.LastRow(i);
      next[i][0] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      d.seqs.push_back(SequenceStep{static_cast<uint64_t>(i), next[i], prompt + s, tables[i], false});
    }
    StepOrDie(r, d, &out);
  }
  return static_cast<double>(b) * steps / Seconds(t0, Clock::now());
}

double PrefillTokensPerSecond(CpuModelRunner& r, int n, int32_t block_size) {
  std::vector<int32_t> toks(n), table((n + block_size - 1) / block_size);
  for (int i = 0; i < n; ++i) toks[i] = TokenId(i * 7919, r);
  std::iota(table.begin(), table.end(), 0);
  StepBatch b;
  b.seqs.push_back(SequenceStep{1, toks, 0, table, false});
  StepLogits out;
  auto t0 = Clock::now();
  StepOrDie(r, b, &out);
  return n / Seconds(t0, Clock::now());
}

struct Engine {
  std::string weights;
  std::unique_ptr<CpuModelRunner> runner;
  std::vector<double> d1, d4, d16, pf;
};

struct Llama {
  std::string gguf;
  std::vector<double> d1, d4, d16, pf;
};

std::string Basename(const std::string& path) { return path.substr(path.find_last_of('/') + 1); }

}  // namespace

int main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  std::vector<Engine> engines;
  for (const std::string& kn : a.kernels) {
  for (const std::string& w : a.weights) {
    phi::worker::cpu::CpuRunnerOptions opt;
    opt.weights = w == "f32" ? phi::worker::cpu::WeightFormat::kF32
                  : w == "int8" ? phi::worker::cpu::WeightFormat::kInt8
                                : phi::worker::cpu::WeightFormat::kBF16;
    opt.quantize_lm_head = !a.int8_bf16_lm_head;
    opt.num_threads = a.threads;
    phi::worker::cpu::ParseKernelPath(kn, &opt.kernel);
    auto t0 = Clock::now();
    auto runner = CpuModelRunner::Create(a.model, opt);
    if (!runner.ok()) {
      std::fprintf(stderr, "%s: load failed: %s\n", a.model.c_str(), runner.status().ToString().c_str());
      return 1;
    }
    engines.push_back(Engine{a.kernels.size() > 1 ? w + "@" + kn : w, *std::move(runner), {}, {}, {}, {}});
    CpuModelRunner& r = *engines.back().runner;
    std::printf("model %s: %d layers, hidden %d, vocab %d; weights %s (kernels %s): %.2f GB in memory, %.2f GB read "
                "per decode step; load %.1f s\n",
                a.model.c_str(), r.config().num_hidden_layers, r.config().hidden_size, r.config().vocab_size, w.c_str(),
                r.kernel_name().c_str(), r.weight_memory_bytes() / 1e9, r.weight_bytes_per_step() / 1e9,
                Seconds(t0, Clock::now()));
  }
  }
  CpuModelRunner& first = *engines.front().runner;
  const int prompt = std::min<int>(a.prompt, first.shape().max_position_embeddings);
  constexpr int32_t kBlock = 16;
  const int32_t blocks =
      std::max<int32_t>(16 * ((32 + a.decode_steps + kBlock) / kBlock), (prompt + kBlock) / kBlock) + 1;
  for (auto& e : engines) {
    if (absl::Status st = e.runner->AllocateKvCache({blocks, kBlock}); !st.ok()) {
      std::fprintf(stderr, "KV cache: %s\n", st.ToString().c_str());
      return 1;
    }
    (void)DecodeTokensPerSecond(*e.runner, 1, 2, kBlock);  // warm-up: page in weights, grow buffers
  }
  std::vector<Llama> llamas;
  for (const auto& g : a.llama_models) llamas.push_back(Llama{g, {}, {}, {}, {}});
  const bool llama = !a.llama_bench.empty() && !llamas.empty();
  const bool batched = !a.llama_batched_bench.empty() && !llamas.empty();
  std::vector<double> bw;
  for (int rep = 0; rep < a.reps; ++rep) {
    bw.push_back(MeasureReadBandwidth(a.threads, size_t{1} << 30));
    std::fprintf(stderr, "rep %d: bw %.1f GB/s\n", rep, bw.back() / 1e9);
    for (auto& e : engines) {
      CpuModelRunner& r = *e.runner;
      e.d1.push_back(DecodeTokensPerSecond(r, 1, a.decode_steps, kBlock));
      e.d4.push_back(DecodeTokensPerSecond(r, 4, a.decode_steps, kBlock));
      e.d16.push_back(DecodeTokensPerSecond(r, 16, a.decode_steps, kBlock));
      e.pf.push_back(PrefillTokensPerSecond(r, prompt, kBlock));
      std::fprintf(stderr, "rep %d: phi-serve %s: decode b1 %.2f b4 %.2f b16 %.2f tok/s, prefill %.1f tok/s\n", rep,
                   e.weights.c_str(), e.d1.back(), e.d4.back(), e.d16.back(), e.pf.back());
    }
    for (auto& l : llamas) {
      if (llama) {
        auto [pp, tg] = RunLlamaBench(a, l.gguf);
        l.pf.push_back(pp);
        l.d1.push_back(tg);
      }
      if (batched) {
        auto [d4, d16] = RunLlamaBatched(a, l.gguf);
        l.d4.push_back(d4);
        l.d16.push_back(d16);
      }
      std::fprintf(stderr, "rep %d: llama.cpp %s: decode b1 %.2f b4 %.2f b16 %.2f tok/s, prefill %.1f tok/s\n", rep,
                   Basename(l.gguf).c_str(), l.d1.empty() ? 0 : l.d1.back(), l.d4.empty() ? 0 : l.d4.back(),
                   l.d16.empty() ? 0 : l.d16.back(), l.pf.empty() ? 0 : l.pf.back());
    }
  }
  const double bwm = Median(bw);
  std::printf("\nCPU: %s, %d threads; phi-serve kernels: %s (best this CPU has: %s)\n", phi::bench::CpuModelName().c_str(),
              a.threads, std::string(phi::worker::cpu::IsaName(first.isa())).c_str(),
              std::string(phi::worker::cpu::IsaName(phi::worker::cpu::BestIsa())).c_str());
  std::printf("memory read bandwidth (%d threads, median of %d): %.1f GB/s\n\n", a.threads, a.reps, bwm / 1e9);
  std::printf("| engine (median of %d) | weights in memory | decode b1 tok/s (%% of bw limit) | decode b4 tok/s | "
              "decode b16 tok/s | prefill %d tok/s |\n|---|---|---|---|---|---|\n",
              a.reps, prompt);
  for (const auto& e : engines) {
    const double limit = bwm / static_cast<double>(e.runner->weight_bytes_per_step());
    std::printf("| phi-serve %s (%s) | %.2f GB | %.2f (%.0f%%) | %.2f | %.2f | %.1f |\n", e.weights.c_str(),
                e.runner->kernel_name().c_str(), e.runner->weight_memory_bytes() / 1e9, Median(e.d1),
                100.0 * Median(e.d1) / limit, Median(e.d4), Median(e.d16), Median(e.pf));
  }
  for (const auto& l : llamas) {
    std::printf("| llama.cpp %s | | %.2f | %.2f | %.2f | %.1f |\n", Basename(l.gguf).c_str(), Median(l.d1),
                Median(l.d4), Median(l.d16), Median(l.pf));
  }
  if (!llamas.empty()) {
    std::printf("\n| ratio (medians) | decode b1 | decode b4 | decode b16 | prefill |\n|---|---|---|---|---|\n");
    for (const auto& e : engines) {
      for (const auto& l : llamas) {
        auto ratio = [](const std::vector<double>& x, const std::vector<double>& y) {
          return Median(y) > 0 ? Median(x) / Median(y) : 0.0;
        };
        std::printf("| phi-serve %s / llama.cpp %s | %.2fx | %.2fx | %.2fx | %.2fx |\n", e.weights.c_str(),
                    Basename(l.gguf).c_str(), ratio(e.d1, l.d1), ratio(e.d4, l.d4), ratio(e.d16, l.d16),
                    ratio(e.pf, l.pf));
      }
    }
  }
  return 0;
}
