// LoRA on the CUDA backend at Phi-1.5's shape (random BF16 base weights made on the device,
// random rank-R adapters on all six projections): the segmented shrink + expand of one
// projection against the bytes it reads, then decode step time and prefill time of the whole
// model with adapters against the base, at batch 1 (one adapter) and 16 (16 sequences over 4
// adapters, in runs of 4). Steps with adapters run eagerly (PhiCudaOptions::
// max_adapter_slots); the base keeps its decode graphs unless --no-graphs.
//   phi_cuda_lora_bench [--rank 16] [--gen 64] [--prompt 512] [--no-graphs]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.h"
#include "bench/cuda/fill_random.h"
#include "bench/cuda/random_weights.h"
#include "services/worker/backends/cuda/lora_kernels.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace {

using phi::bench::Check;
using phi::bench::Die;
using phi::bench::GraphUs;
using phi::bench::Median;
using phi::bench::NowMs;
using namespace phi::worker::cuda;

struct Args {
  int rank = 16;
  int gen = 64;
  int prompt = 512;
  bool graphs = true;
};

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) Die(f + " needs a value");
      return std::atoi(argv[++i]);
    };
    if (f == "--rank") a.rank = value();
    else if (f == "--gen") a.gen = value();
    else if (f == "--prompt") a.prompt = value();
    else if (f == "--no-graphs") a.graphs = false;
    else Die("unknown flag " + f);
  }
  if (a.rank < 1 || a.rank > 64 || a.gen < 2 || a.prompt < 1) Die("--rank 1..64, --gen >= 2, --prompt >= 1");
  return a;
}

// One projection's shrink + expand for `tokens` tokens in `segments` equal runs, each of its
// own slot: microseconds per call inside a graph.
double KernelUs(int in, int out, int rank, int tokens, int segments) {
  const int slots = segments;
  std::vector<LoraSlotWeights> table(slots + 1);
  std::vector<void*> owned;
  auto dev = [&](size_t bytes) {
    void* p;
    Check(cudaMalloc(&p, bytes), "cudaMalloc");
    owned.push_back(p);
    return p;
  };
  for (int s = 1; s <= slots; ++s) {
    auto* a = static_cast<bf16*>(dev(2 * size_t(rank) * in));
    auto* b = static_cast<bf16*>(dev(2 * size_t(rank) * out));
    Check(phi::bench::fill_random_forward(a, int64_t(rank) * in, 10 + s, 0.05f, nullptr), "fill");
    Check(phi::bench::fill_random_forward(b, int64_t(rank) * out, 20 + s, 0.05f, nullptr), "fill");
    table[s] = {a, b, rank, 2.0f};
  }
  std::vector<LoraSegment> segs;
  const int per = tokens / segments;
  for (int s = 0; s < segments; ++s) segs.push_back({s * per, s + 1 == segments ? tokens - s * per : per, s + 1});
  auto* dtable = static_cast<LoraSlotWeights*>(dev(sizeof(LoraSlotWeights) * table.size()));
  auto* dsegs = static_cast<LoraSegment*>(dev(sizeof(LoraSegment) * segs.size()));
  Check(cudaMemcpy(dtable, table.data(), sizeof(LoraSlotWeights) * table.size(), cudaMemcpyHostToDevice), "copy");
  Check(cudaMemcpy(dsegs, segs.data(), sizeof(LoraSegment) * segs.size(), cudaMemcpyHostToDevice), "copy");
  auto* x = static_cast<bf16*>(dev(2 * size_t(tokens) * in));
  auto* y = static_cast<bf16*>(dev(2 * size_t(tokens) * out));
  auto* u = static_cast<float*>(dev(4 * size_t(tokens) * rank));
  Check(phi::bench::fill_random_forward(x, int64_t(tokens) * in, 3, 1.0f, nullptr), "fill");
  Check(cudaMemset(y, 0, 2 * size_t(tokens) * out), "memset");
  LoraSegments sg{dtable, dsegs, segments, tokens - (segments - 1) * per};
  const double us = GraphUs([&](int, cudaStream_t st) -> CudaStatus {
    LoraShrinkArgs sa{sg, x, in, in, u, rank};
    PHI_CUDA_RETURN_IF_ERROR(lora_shrink_forward(sa, st));
    LoraExpandArgs ea{sg, u, rank, y, false, out, out};
    return lora_expand_forward(ea, st);
  });
  for (void* p : owned) cudaFree(p);
  return us;
}

// A random adapter on all six projections (host F32) and its view.
struct HostAdapter {
  std::vector<std::vector<float>> store;
  PhiCudaAdapter view;
};
HostAdapter RandomAdapter(const PhiCudaConfig& c, int rank, uint32_t seed) {
  const int h = c.hidden_size, ha = c.num_heads * c.head_dim, im = c.intermediate_size;
  const int ins[6] = {h, h, h, ha, h, im}, outs[6] = {ha, ha, ha, h, im, h};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-0.02f, 0.02f);
  HostAdapter a;
  a.store.reserve(12 * c.num_layers);
  a.view.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    for (int t = 0; t < 6; ++t) {
      for (size_t n : {size_t(rank) * ins[t], size_t(outs[t]) * rank}) {
        a.store.emplace_back(n);
        for (float& v : a.store.back()) v = d(rng);
      }
      a.view.layers[l][t] = {rank, 2.0f, a.store[a.store.size() - 2], a.store.back()};
    }
  }
  return a;
}

struct Timing {
  double prefill_ms = 0, step_ms = 0;
};

// `batch` sequences (slot of sequence b: slots[b]) prefilled one step each, then gen - 1
// decode steps of the whole batch; the decode step's median.
Timing Run(PhiCudaModel& m, const std::vector<int>& slots, int prompt, int gen) {
  const int batch = static_cast<int>(slots.size()), bs = m.options().block_size;
  const int per_seq = (prompt + gen + bs - 1) / bs;
  std::vector<std::vector<int32_t>> tables(batch), toks(batch);
  for (int b = 0; b < batch; ++b) {
    tables[b].resize(per_seq);
    std::iota(tables[b].begin(), tables[b].end(), b * per_seq);
    toks[b].assign(prompt + gen, 0);
    for (int i = 0; i < prompt + gen; ++i) toks[b][i] = (b * 7919 + i * 104729) % 50000;
  }
  Timing t;
  std::vector<double> pre;
  for (int b = 0; b < batch; ++b) {
    PhiSeqInput s;
    s.tokens = std::span<const int32_t>(toks[b]).first(prompt);
    s.block_table = tables[b];
    s.adapter_slot = slots[b];
    PhiStepOutput o;
    const double t0 = NowMs();
    Check(m.Forward({&s, 1}, &o), "prefill");
    pre.push_back(NowMs() - t0);
  }
  t.prefill_ms = Median(pre);
  std::vector<double> steps;
  for (int g = 0; g + 1 < gen; ++g) {
    std::vector<PhiSeqInput> in(batch);
    for (int b = 0; b < batch; ++b) {
      in[b].tokens = std::span<const int32_t>(toks[b]).subspan(prompt + g, 1);
      in[b].start_pos = prompt + g;
      in[b].block_table = tables[b];
      in[b].adapter_slot = slots[b];
    }
    PhiStepOutput o;
    const double t0 = NowMs();
    Check(m.Forward(in, &o), "decode");
    steps.push_back(NowMs() - t0);
  }
  t.step_ms = Median(steps);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s, %d SMs; adapters of rank %d on q_proj, k_proj, v_proj, dense, fc1, fc2\n\n",
              prop.name, prop.multiProcessorCount, args.rank);

  PhiCudaConfig c;  // Phi-1.5
  std::printf("| projection (in -> out) | tokens | segments | shrink+expand us | adapter bytes |\n"
              "|---|---|---|---|---|\n");
  const int h = c.hidden_size, im = c.intermediate_size;
  struct P { const char* name; int in, out; };
  for (P p : {P{"q/k/v, dense (2048 -> 2048)", h, h}, P{"fc1 (2048 -> 8192)", h, im},
              P{"fc2 (8192 -> 2048)", im, h}}) {
    for (auto [tok, seg] : {std::pair{1, 1}, std::pair{16, 4}, std::pair{512, 1}}) {
      std::printf("| %s | %d | %d | %.1f | %.0f KiB |\n", p.name, tok, seg,
                  KernelUs(p.in, p.out, args.rank, tok, seg),
                  2.0 * seg * args.rank * (p.in + p.out) / 1024.0);
    }
  }

  PhiCudaOptions o;
  o.max_tokens_per_step = 2048;
  o.max_seqs = 64;
  o.max_logit_rows = 64;
  o.use_cuda_graphs = args.graphs;
  o.max_adapter_slots = 4;
  o.max_adapter_rank = args.rank;
  std::unique_ptr<PhiCudaModel> m;
  Check(PhiCudaModel::Create(c, o, &m), "PhiCudaModel::Create");
  Check(phi::bench::FillRandomWeights(*m, 7, 0.02f), "weights");
  const int per_seq = (args.prompt + args.gen + 15) / 16;
  Check(m->AllocateKvCache(16 * per_seq + 1), "AllocateKvCache");
  std::vector<HostAdapter> adapters;
  for (int s = 1; s <= 4; ++s) {
    adapters.push_back(RandomAdapter(c, args.rank, 100 + s));
    const double t0 = NowMs();
    Check(m->SetAdapter(s, &adapters.back().view), "SetAdapter");
    std::printf("%sSetAdapter (rank %d, all six projections, 24 layers): %.1f ms\n",
                s == 1 ? "\n" : "", args.rank, NowMs() - t0);
  }

  std::printf("\n| batch | adapters | prefill %d tokens ms (base / LoRA) | decode ms/step (base / "
              "LoRA) | decode slowdown |\n|---|---|---|---|---|\n", args.prompt);
  for (int batch : {1, 16}) {
    std::vector<int> base(batch, 0), lora(batch);
    for (int b = 0; b < batch; ++b) lora[b] = 1 + b / std::max(1, batch / 4);  // runs of 4
    Run(*m, base, args.prompt, 4);  // warm-up: plans, graphs
    const Timing tb = Run(*m, base, args.prompt, args.gen);
    Run(*m, lora, args.prompt, 4);
    const Timing tl = Run(*m, lora, args.prompt, args.gen);
    std::printf("| %d | %d | %.2f / %.2f | %.3f / %.3f | %+.0f%% |\n", batch, batch == 1 ? 1 : 4,
                tb.prefill_ms, tl.prefill_ms, tb.step_ms, tl.step_ms,
                100.0 * (tl.step_ms / tb.step_ms - 1.0));
  }
  return 0;
}
