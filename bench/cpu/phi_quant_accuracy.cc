// INT8 weights against the BF16 (or F32) weights of the same checkpoint, on the CPU
// backend: how far the quantized model's next-token distributions and greedy text move.
//
//   phi_quant_accuracy --model DIR [--reference bf16|f32] [--candidate int8] [--bf16-lm-head]
//                      [--prompts 100] [--prompt-len 64] [--greedy 128] [--batch 25]
//                      [--threads 2] [--seed 1]
//
// Both runners load DIR (the candidate quantizes every linear layer at load; with
// --bf16-lm-head, all but lm_head). Prompts are seeded random token ids below the
// tokenizer's size, of lengths between half and all of --prompt-len. Every step carries
// --batch prompts, as the engine batches them (a sequence's outputs do not depend on the
// rest of its batch: the program checks that where it can, see "batch invariance").
//
//  1. Prefill, every position's logits on both: KL(P_ref || P_int8) over the whole
//     vocabulary row (log-softmax in double), and whether the two argmaxes agree.
//  2. Greedy decoding, --greedy tokens each, free-running: each runner continues its own
//     text. The share of prompts whose continuations are identical, and the length of
//     the identical prefix (one early flip changes everything after it, so this compounds).
//  3. Teacher-forced: the candidate is fed the reference's greedy tokens (a second copy of
//     each sequence in the candidate's batch), and its argmax and KL are scored at every
//     position of the reference's path. This is the cleaner per-token number.
// So the candidate runs 2 x --batch sequences per step, twice the reference's work, and
// holds KV for them: at the defaults on Phi-1.5 (6.3 MB per 16-token block), 1.9 GB of KV
// for the reference and 3.8 GB for the candidate, besides about 2.8 + 1.6 GB of weights.
// Argmax (top-1, greedy) is over the ids the engine samples, below the tokenizer's size,
// lowest id on ties; EOS does not stop a continuation.
//
// Random weights (tools/make_model.py) measure how faithfully the INT8 kernels reproduce
// the reference arithmetic, not how much a trained model degrades: a random model's logits
// are flatter, so its top-1 flips more easily, while a trained model's outliers (which
// per-block scales absorb differently) are absent.
//
// Exit status: 0, 1 if a runner fails or a logits row is not finite, 2 on a bad flag.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bench/common/cpu_model_name.h"
#include "services/worker/backends/cpu/phi_cpu_runner.h"

namespace {

using Clock = std::chrono::steady_clock;
using phi::worker::cpu::CpuModelRunner;
using phi::worker::cpu::WeightFormat;
using phi::worker::SequenceStep;
using phi::worker::StepBatch;
using phi::worker::StepLogits;

constexpr int32_t kBlockSize = 16;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Args {
  std::string model;
  std::string reference = "bf16";
  std::string candidate = "int8";
  bool bf16_lm_head = false;
  // Both runners' kernel path. auto may be avx512bf16, whose BF16 GEMMs round the
  // activations: --kernels avx512 (or avx2) measures INT8 against the exact BF16 forward.
  std::string kernels = "auto";
  int prompts = 100;
  int prompt_len = 64;
  int greedy = 128;
  int batch = 25;
  int threads = 2;
  uint64_t seed = 1;
};

[[noreturn]] void Usage(const char* argv0, int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: %s --model DIR [--reference bf16|f32] [--candidate int8] [--bf16-lm-head]\n"
               "       [--kernels auto|avx512bf16|avx512|avx2|portable]\n"
               "       [--prompts N] [--prompt-len N] [--greedy N] [--batch N] [--threads N] [--seed N]\n",
               argv0);
  std::exit(code);
}

[[noreturn]] void BadFlag(const std::string& flag, const std::string& value, const char* expected) {
  std::fprintf(stderr, "%s %s: expected %s\n", flag.c_str(), value.c_str(), expected);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    auto num = [&](long long lo, long long hi) {
      const std::string v = val();
      char* end = nullptr;
      errno = 0;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || errno != 0 || n < lo || n > hi) {
        std::fprintf(stderr, "%s %s: expected an integer in [%lld, %lld]\n", k.c_str(), v.c_str(), lo, hi);
        std::exit(2);
      }
      return n;
    };
    if (k == "--model") a.model = val();
    else if (k == "--reference") a.reference = val();
    else if (k == "--candidate") a.candidate = val();
    else if (k == "--bf16-lm-head") a.bf16_lm_head = true;
    else if (k == "--kernels") a.kernels = val();
    else if (k == "--prompts") a.prompts = static_cast<int>(num(1, 1000000));
    else if (k == "--prompt-len") a.prompt_len = static_cast<int>(num(1, 1000000));
    else if (k == "--greedy") a.greedy = static_cast<int>(num(1, 1000000));
    else if (k == "--batch") a.batch = static_cast<int>(num(1, 4096));
    else if (k == "--threads") a.threads = static_cast<int>(num(1, 1024));
    else if (k == "--seed") a.seed = static_cast<uint64_t>(num(0, INT64_MAX));
    else if (k == "--help" || k == "-h") Usage(argv[0], 0);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      Usage(argv[0], 2);
    }
  }
  if (a.model.empty()) {
    std::fprintf(stderr, "--model is required (a Phi model folder)\n");
    std::exit(2);
  }
  if (a.reference != "bf16" && a.reference != "f32") BadFlag("--reference", a.reference, "bf16 or f32");
  if (a.candidate != "int8") BadFlag("--candidate", a.candidate, "int8");
  phi::worker::cpu::KernelPath kp;
  if (!phi::worker::cpu::ParseKernelPath(a.kernels, &kp)) {
    BadFlag("--kernels", a.kernels, "auto, avx512bf16, avx512, avx2 or portable");
  }
  return a;
}

std::string Basename(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path.substr(path.find_last_of('/') + 1);
}

// splitmix64: the same prompts on every platform and standard library.
uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int64_t Uniform(uint64_t* state, int64_t n) { return static_cast<int64_t>(SplitMix(state) % static_cast<uint64_t>(n)); }

// Highest logit among ids [0, limit), lowest id on ties (the engine's greedy choice).
int32_t Argmax(std::span<const float> row, int32_t limit) {
  int32_t best = 0;
  for (int32_t j = 1; j < limit; ++j)
    if (row[j] > row[best]) best = j;
  return best;
}

void LogSoftmax(std::span<const float> x, std::vector<double>* out) {
  out->resize(x.size());
  double m = -INFINITY;
  for (float v : x) m = std::max(m, static_cast<double>(v));
  double s = 0.0;
  for (float v : x) s += std::exp(static_cast<double>(v) - m);
  const double lse = m + std::log(s);
  for (size_t j = 0; j < x.size(); ++j) (*out)[j] = static_cast<double>(x[j]) - lse;
}

// The positions of one kind (prefill, teacher-forced): per position KL(P_ref || P_cand),
// and how confident the reference was (its top-1 probability, and the logit margin of its
// top-1 over its top-2: a flat row's argmax flips on a tiny perturbation).
struct Series {
  std::vector<double> kl, ref_top1_prob, ref_margin;
  int64_t agree = 0;  // positions where the argmaxes agree
};

class Scorer {
 public:
  explicit Scorer(int32_t argmax_limit) : limit_(argmax_limit) {}

  void Add(std::span<const float> ref, std::span<const float> cand, Series* s) {
    LogSoftmax(ref, &lp_);
    LogSoftmax(cand, &lq_);
    double d = 0.0;
    for (size_t j = 0; j < lp_.size(); ++j) d += std::exp(lp_[j]) * (lp_[j] - lq_[j]);
    if (!std::isfinite(d)) ++nonfinite_;
    s->kl.push_back(d);
    const int32_t top = Argmax(ref, limit_);
    if (top == Argmax(cand, limit_)) ++s->agree;
    float second = -INFINITY;
    for (int32_t j = 0; j < limit_; ++j)
      if (j != top) second = std::max(second, ref[j]);
    s->ref_top1_prob.push_back(std::exp(lp_[top]));
    s->ref_margin.push_back(static_cast<double>(ref[top]) - static_cast<double>(second));
  }
  int64_t nonfinite() const { return nonfinite_; }

 private:
  int32_t limit_;
  std::vector<double> lp_, lq_;
  int64_t nonfinite_ = 0;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 == 1 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

struct Stats {
  double mean = 0, p99 = 0, max = 0;
};

Stats Summarize(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  // Nearest rank: the smallest value with at least 99% of the values at or below it.
  const size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(v.size())));
  s.p99 = v[std::max<size_t>(rank, 1) - 1];
  s.max = v.back();
  return s;
}

void StepOrDie(CpuModelRunner& r, const StepBatch& b, StepLogits* out, const char* what) {
  if (absl::Status st = r.Step(b, out); !st.ok()) {
    std::fprintf(stderr, "%s forward pass failed: %s\n", what, st.ToString().c_str());
    std::exit(1);
  }
}

bool SameRow(std::span<const float> a, std::span<const float> b) {
  return std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

std::unique_ptr<CpuModelRunner> Load(const Args& a, WeightFormat format) {
  phi::worker::cpu::CpuRunnerOptions opt;
  opt.weights = format;
  opt.quantize_lm_head = !a.bf16_lm_head;
  opt.num_threads = a.threads;
  phi::worker::cpu::ParseKernelPath(a.kernels, &opt.kernel);
  auto r = CpuModelRunner::Create(a.model, opt);
  if (!r.ok()) {
    std::fprintf(stderr, "%s: load (%s) failed: %s\n", a.model.c_str(),
                 std::string(phi::worker::cpu::WeightFormatName(format)).c_str(), r.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(r);
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  const auto t_start = Clock::now();

  auto ref = Load(a, a.reference == "f32" ? WeightFormat::kF32 : WeightFormat::kBF16);
  auto cand = Load(a, WeightFormat::kInt8);
  const phi::worker::ModelShape& shape = ref->shape();
  const int32_t vocab = shape.vocab_size;
  // Prompts are drawn from the tokenizer's ids; greedy choices and KL cover every output row, as the
  // engine's greedy and logprobs do (transformers' rule).
  const int32_t prompt_ids =
      shape.tokenizer_vocab_size > 0 ? std::min(shape.tokenizer_vocab_size, shape.vocab_size) : shape.vocab_size;
  const int32_t limit = vocab;
  if (static_cast<int64_t>(a.prompt_len) + a.greedy > shape.max_position_embeddings) {
    std::fprintf(stderr, "--prompt-len %d + --greedy %d: expected at most the model's %d positions in all\n",
                 a.prompt_len, a.greedy, shape.max_position_embeddings);
    return 2;
  }

  // The candidate holds two copies of each sequence: free-running and teacher-forced.
  // Positions written: the prompt and the first greedy - 1 continuation tokens.
  const int32_t blocks_per_seq = (a.prompt_len + a.greedy - 1 + kBlockSize - 1) / kBlockSize;
  const int32_t batch = std::min(a.batch, a.prompts);
  double kv_gb = 0;
  for (auto [runner, copies] : {std::pair{ref.get(), 1}, std::pair{cand.get(), 2}}) {
    const int64_t blocks = int64_t{blocks_per_seq} * batch * copies;
    const double gb = static_cast<double>(blocks) * static_cast<double>(runner->KvBlockBytes(kBlockSize)) / 1e9;
    kv_gb += gb;
    if (blocks > INT32_MAX) {
      std::fprintf(stderr, "--batch %d: a KV cache of %lld blocks is too many\n", a.batch,
                   static_cast<long long>(blocks));
      return 2;
    }
    if (absl::Status st = runner->AllocateKvCache({static_cast<int32_t>(blocks), kBlockSize}); !st.ok()) {
      std::fprintf(stderr, "KV cache (%lld blocks, %.2f GB): %s\n", static_cast<long long>(blocks), gb,
                   st.ToString().c_str());
      return 1;
    }
  }
  const double load_s = Seconds(t_start, Clock::now());
  std::fprintf(stderr,
               "loaded %s: reference %s, candidate %s, %.1f s; weights %.2f + %.2f GB, KV %.2f GB; %d prompts of "
               "%d..%d tokens, %d greedy, batch %d\n",
               a.model.c_str(), ref->kernel_name().c_str(), cand->kernel_name().c_str(), load_s,
               static_cast<double>(ref->weight_memory_bytes()) / 1e9,
               static_cast<double>(cand->weight_memory_bytes()) / 1e9, kv_gb, a.prompts,
               std::max(1, (a.prompt_len + 1) / 2), a.prompt_len, a.greedy, batch);

  // Prompts, drawn up front so that --batch does not change them.
  uint64_t rng = a.seed;
  std::vector<std::vector<int32_t>> prompts(a.prompts);
  const int min_len = std::max(1, (a.prompt_len + 1) / 2);
  for (auto& p : prompts) {
    p.resize(min_len + Uniform(&rng, a.prompt_len - min_len + 1));
    for (int32_t& t : p) t = static_cast<int32_t>(Uniform(&rng, prompt_ids));
  }

  Scorer scorer(limit);
  Series prefill, forced;
  std::vector<int> identical_prefix;  // per prompt, tokens until the first difference
  int64_t invariance_checked = 0, invariance_broken = 0;
  double prefill_s = 0, decode_s = 0;

  std::vector<std::vector<int32_t>> tables(2 * batch);
  for (int32_t s = 0; s < 2 * batch; ++s) {
    tables[s].resize(blocks_per_seq);
    std::iota(tables[s].begin(), tables[s].end(), s * blocks_per_seq);
  }

  StepLogits out_ref, out_cand;
  for (int first = 0; first < a.prompts; first += batch) {
    const int n = std::min(batch, a.prompts - first);
    std::fprintf(stderr, "prompts %d..%d of %d\n", first + 1, first + n, a.prompts);

    // 1. Prefill. Candidate: sequences 0..n-1 free-running (every row), n..2n-1 their
    // teacher-forced copies (the last row only).
    auto t0 = Clock::now();
    StepBatch pre_ref, pre_cand;
    for (int i = 0; i < n; ++i) {
      const auto& p = prompts[first + i];
      pre_ref.seqs.push_back(SequenceStep{static_cast<uint64_t>(i), p, 0, tables[i], true});
      pre_cand.seqs.push_back(SequenceStep{static_cast<uint64_t>(i), p, 0, tables[i], true});
    }
    for (int i = 0; i < n; ++i) {
      pre_cand.seqs.push_back(
          SequenceStep{static_cast<uint64_t>(n + i), prompts[first + i], 0, tables[batch + i], false});
    }
    StepOrDie(*ref, pre_ref, &out_ref, "reference");
    StepOrDie(*cand, pre_cand, &out_cand, "candidate");
    prefill_s += Seconds(t0, Clock::now());

    std::vector<std::vector<int32_t>> ref_text(n), cand_text(n);
    for (int i = 0; i < n; ++i) {
      const int rows = out_ref.num_rows[i];
      for (int j = 0; j < rows; ++j) {
        scorer.Add(out_ref.Row(out_ref.first_row[i] + j), out_cand.Row(out_cand.first_row[i] + j), &prefill);
      }
      // Teacher-forced position 0 is the prompt's last row (the same for both copies).
      const auto last_ref = out_ref.LastRow(i), last_cand = out_cand.LastRow(i);
      scorer.Add(last_ref, last_cand, &forced);
      ++invariance_checked;
      if (!SameRow(last_cand, out_cand.LastRow(n + i))) ++invariance_broken;
      ref_text[i].push_back(Argmax(last_ref, limit));
      cand_text[i].push_back(Argmax(last_cand, limit));
    }

    // 2 + 3. Decode: step t feeds continuation token t at position len + t.
    t0 = Clock::now();
    std::vector<bool> diverged(n, false);
    for (int t = 0; t + 1 < a.greedy; ++t) {
      StepBatch d_ref, d_cand;
      for (int i = 0; i < n; ++i) {
        const int32_t pos = static_cast<int32_t>(prompts[first + i].size()) + t;
        d_ref.seqs.push_back(SequenceStep{static_cast<uint64_t>(i), std::span(ref_text[i]).subspan(t, 1), pos,
                                          tables[i], false});
        d_cand.seqs.push_back(SequenceStep{static_cast<uint64_t>(i), std::span(cand_text[i]).subspan(t, 1), pos,
                                           tables[i], false});
      }
      for (int i = 0; i < n; ++i) {
        const int32_t pos = static_cast<int32_t>(prompts[first + i].size()) + t;
        d_cand.seqs.push_back(SequenceStep{static_cast<uint64_t>(n + i), std::span(ref_text[i]).subspan(t, 1), pos,
                                           tables[batch + i], false});
      }
      StepOrDie(*ref, d_ref, &out_ref, "reference");
      StepOrDie(*cand, d_cand, &out_cand, "candidate");
      for (int i = 0; i < n; ++i) {
        const auto r = out_ref.LastRow(i), free_row = out_cand.LastRow(i), forced_row = out_cand.LastRow(n + i);
        scorer.Add(r, forced_row, &forced);
        // Until the free-running texts differ, both candidate copies have had the same input.
        diverged[i] = diverged[i] || ref_text[i][t] != cand_text[i][t];
        if (!diverged[i]) {
          ++invariance_checked;
          if (!SameRow(free_row, forced_row)) ++invariance_broken;
        }
        ref_text[i].push_back(Argmax(r, limit));
        cand_text[i].push_back(Argmax(free_row, limit));
      }
    }
    decode_s += Seconds(t0, Clock::now());
    for (int i = 0; i < n; ++i) {
      const auto mm = std::mismatch(ref_text[i].begin(), ref_text[i].end(), cand_text[i].begin());
      identical_prefix.push_back(static_cast<int>(mm.first - ref_text[i].begin()));
    }
  }
  const double total_s = Seconds(t_start, Clock::now());

  const Stats pf = Summarize(prefill.kl), tf = Summarize(forced.kl);
  const int identical = static_cast<int>(std::count(identical_prefix.begin(), identical_prefix.end(), a.greedy));
  const double median_prefix = Median(std::vector<double>(identical_prefix.begin(), identical_prefix.end()));
  const double mean_prefix =
      std::accumulate(identical_prefix.begin(), identical_prefix.end(), 0.0) / static_cast<double>(a.prompts);
  auto pct = [](int64_t k, size_t n) { return n == 0 ? 0.0 : 100.0 * static_cast<double>(k) / static_cast<double>(n); };

  const phi::worker::model::PhiConfig& c = ref->config();
  std::printf("\nmodel %s: %d layers, hidden %d, vocab %d (argmax over all rows; prompts from the tokenizer's %d ids); %d prompts "
              "of %d..%d random tokens (seed %llu), %d greedy tokens each, %d prompts per step, %d threads\n\n",
              a.model.c_str(), c.num_hidden_layers, c.hidden_size, vocab, prompt_ids, a.prompts, min_len, a.prompt_len,
              static_cast<unsigned long long>(a.seed), a.greedy, batch, a.threads);
  std::printf("| model | reference (kernels) | candidate (kernels) | CPU | prefill positions | KL mean | KL p99 | "
              "KL max | top-1 agree | %d-token greedy identical | identical prefix mean / median | "
              "teacher-forced top-1 agree | teacher-forced KL mean / p99 | elapsed |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
              a.greedy);
  std::printf("| %s | %s (%s) | int8%s (%s) | %s | %zu | %.3g | %.3g | %.3g | %.2f%% | %.0f%% (%d/%d) | %.1f / %.1f | "
              "%.2f%% (%zu) | %.3g / %.3g | %.1f s |\n",
              Basename(a.model).c_str(), a.reference.c_str(), ref->kernel_name().c_str(),
              a.bf16_lm_head ? ", bf16 lm_head" : "", cand->kernel_name().c_str(), phi::bench::CpuModelName().c_str(),
              prefill.kl.size(), pf.mean, pf.p99, pf.max, pct(prefill.agree, prefill.kl.size()),
              pct(identical, identical_prefix.size()), identical, a.prompts, mean_prefix, median_prefix,
              pct(forced.agree, forced.kl.size()), forced.kl.size(), tf.mean, tf.p99, total_s);
  std::printf("\nKL in nats, per position, over all %d logits of a row; teacher-forced: the candidate scored on the "
              "reference's greedy path (%zu positions). Time: load %.1f s, prefill %.1f s, decode %.1f s.\n",
              vocab, forced.kl.size(), load_s, prefill_s, decode_s);
  std::printf("How sure the reference was (medians; a flat row's top-1 flips on a tiny perturbation): top-1 "
              "probability %.3g prefill, %.3g teacher-forced; top-1 minus top-2 logit %.3g prefill, %.3g "
              "teacher-forced.\n",
              Median(prefill.ref_top1_prob), Median(forced.ref_top1_prob), Median(prefill.ref_margin),
              Median(forced.ref_margin));
  std::printf("Batch invariance (candidate rows of two copies with equal inputs): %lld of %lld rows differ%s\n",
              static_cast<long long>(invariance_broken), static_cast<long long>(invariance_checked),
              invariance_broken == 0 ? "" : " (the runner's contract says none should)");
  std::printf("A checkpoint with random weights (tools/make_model.py) measures how faithfully the INT8 kernels "
              "follow the reference arithmetic, not how much a trained model degrades.\n");
  if (scorer.nonfinite() > 0) {
    std::fprintf(stderr, "%lld positions have a KL that is not finite: a logits row holds NaN or infinity\n",
                 static_cast<long long>(scorer.nonfinite()));
    return 1;
  }
  return 0;
}
