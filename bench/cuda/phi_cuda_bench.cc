// Phi-1.5 on one GPU: the two ceilings (device copy bandwidth, BF16 GEMM rate), then batch-1
// decode, TTFT and generated tokens/s at several batch sizes for the real Phi-1.5 shape with
// random BF16 weights generated on the device (no file needed). Every figure is printed with
// its limit: decode against weight bytes / copy bandwidth, prefill and throughput against
// FLOPs / GEMM rate.
//   phi_cuda_bench [--batches 1,8,32,128,256] [--gen 256] [--prompt 512] [--no-graphs] [--candidates]
//                  [--kv-dtype bf16|fp8] [--decode-partitions N|auto] [--no-fusion] [--no-pdl]
//                  [--no-tc-prefill] [--candidate-slices N] [--gemv-max-m N] [--breakdown]
// --kv-dtype fp8: the KV cache in FP8 E4M3 (PhiCudaOptions::kv_dtype); the limit column then
// counts the FP8 KV bytes (half of BF16's). --decode-partitions: PhiCudaOptions::
// decode_partitions (auto = -1: decode attention blocks per (sequence, head) from the batch).
// --no-fusion / --no-pdl: decode of 1..8 sequences with the LayerNorm and gelu kernels of
// their own / without programmatic dependent launch (PhiCudaOptions), to measure what each is
// worth. --gemv-max-m N: GEMMs of at most N rows on the decode GEMV instead of cuBLASLt
// (PhiCudaOptions::gemv_max_m; with --no-fusion, 8 isolates the fusion at batch 2..8).
// --no-tc-prefill: prefill attention on the FP32-FMA kernel instead of tensor cores.
// --candidate-slices N: with --candidates, rows selected in N vocabulary slices
// (PhiCudaOptions::candidate_slices; 0, the default: chosen from the batch; 1: one block per row).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.h"
#include "bench/cuda/fill_random.h"
#include "bench/cuda/model_access.h"
#include "bench/cuda/phi_cuda_breakdown.h"
#include "bench/cuda/random_weights.h"
#include "services/worker/backends/cuda/candidate_record.h"
#include "services/worker/backends/cuda/gemm_lt.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace {

using phi::bench::Breakdown;
using phi::bench::Check;
using phi::bench::Die;
using phi::bench::FillRandomWeights;
using phi::bench::Median;
using phi::bench::NowMs;
using phi::bench::PhiCudaModelAccess;
using phi::bench::TimeGraphReplay;
using phi::worker::cuda::bf16;
using phi::worker::cuda::CudaStatus;
using phi::worker::cuda::GemmLt;
using phi::worker::cuda::kv_cache_dtype_name;
using phi::worker::cuda::KvCacheDtype;
using phi::worker::cuda::ParseKvCacheDtype;
using phi::worker::cuda::PhiCudaConfig;
using phi::worker::cuda::PhiCudaModel;
using phi::worker::cuda::PhiCudaOptions;
using phi::worker::cuda::PhiSeqInput;
using phi::worker::cuda::PhiStepOutput;
using phi::worker::CandidateRecordBytes;

// Device-to-device copy of a buffer well past L2; bytes read plus written per second.
double CopyBandwidth() {
  const size_t bytes = size_t{2} << 30;
  void *a, *b;
  Check(cudaMalloc(&a, bytes), "cudaMalloc");
  Check(cudaMalloc(&b, bytes), "cudaMalloc");
  Check(phi::bench::fill_random_forward(static_cast<float*>(a), bytes / 4, 1, 1.0f, nullptr),
        "fill");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> ms;
  for (int i = 0; i < 23; ++i) {
    cudaEventRecord(e0);
    Check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice), "copy");
    cudaEventRecord(e1);
    Check(cudaEventSynchronize(e1), "sync");
    float t;
    cudaEventElapsedTime(&t, e0, e1);
    if (i >= 3) ms.push_back(t);
  }
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (Median(ms) * 1e-3);
}

// 8192^3 BF16 GEMM through the same cuBLASLt wrapper the model uses, on random data.
double GemmRate() {
  const int n = 8192;
  std::unique_ptr<GemmLt> g;
  Check(GemmLt::Create(32u << 20, &g), "GemmLt");
  bf16 *a, *w, *d;
  Check(cudaMalloc(&a, size_t{2} * n * n), "cudaMalloc");
  Check(cudaMalloc(&w, size_t{2} * n * n), "cudaMalloc");
  Check(cudaMalloc(&d, size_t{2} * n * n), "cudaMalloc");
  Check(phi::bench::fill_random_forward(a, int64_t{n} * n, 2, 1.0f, nullptr), "fill");
  Check(phi::bench::fill_random_forward(w, int64_t{n} * n, 3, 1.0f, nullptr), "fill");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> ms;
  for (int i = 0; i < 13; ++i) {
    cudaEventRecord(e0);
    Check(g->Matmul(a, w, nullptr, d, false, 0.0f, n, n, n, nullptr), "gemm");
    cudaEventRecord(e1);
    Check(cudaEventSynchronize(e1), "sync");
    float t;
    cudaEventElapsedTime(&t, e0, e1);
    if (i >= 3) ms.push_back(t);
  }
  cudaFree(a);
  cudaFree(w);
  cudaFree(d);
  return 2.0 * n * n * double(n) / (Median(ms) * 1e-3);
}

struct Args {
  bool breakdown = false;
  bool candidates = false;
  std::vector<int> batches = {1, 8, 32, 128, 256};
  int gen = 256;
  int prompt = 512;
  bool graphs = true;
  KvCacheDtype kv_dtype = KvCacheDtype::kBf16;  // --kv-dtype
  int decode_partitions = 0;  // --decode-partitions (PhiCudaOptions; -1: auto)
  bool fuse = true;  // PhiCudaOptions::fuse_decode
  bool pdl = true;   // PhiCudaOptions::programmatic_launch
  bool tc_prefill = true;  // PhiCudaOptions::tensor_core_prefill
  int candidate_slices = 0;  // PhiCudaOptions::candidate_slices
  int gemv_max_m = 1;        // PhiCudaOptions::gemv_max_m
};

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + s);
      return argv[++i];
    };
    if (s == "--batches") {
      a.batches.clear();
      std::string v = next();
      size_t p = 0;
      while (p < v.size()) {
        const size_t q = v.find(',', p);
        a.batches.push_back(std::stoi(v.substr(p, q == std::string::npos ? q : q - p)));
        p = q == std::string::npos ? v.size() : q + 1;
      }
    } else if (s == "--gen") {
      a.gen = std::stoi(next());
    } else if (s == "--prompt") {
      a.prompt = std::stoi(next());
    } else if (s == "--breakdown") {
      a.breakdown = true;
    } else if (s == "--candidates") {
      a.candidates = true;
    } else if (s == "--no-graphs") {
      a.graphs = false;
    } else if (s == "--kv-dtype") {
      const std::string v = next();
      if (!ParseKvCacheDtype(v, &a.kv_dtype)) Die("--kv-dtype " + v + ": expected bf16 or fp8");
    } else if (s == "--decode-partitions") {
      const std::string v = next();
      a.decode_partitions = v == "auto" ? -1 : std::stoi(v);
    } else if (s == "--no-tc-prefill") {
      a.tc_prefill = false;
    } else if (s == "--no-fusion") {
      a.fuse = false;
    } else if (s == "--no-pdl") {
      a.pdl = false;
    } else if (s == "--candidate-slices") {
      a.candidate_slices = std::stoi(next());
    } else if (s == "--gemv-max-m") {
      a.gemv_max_m = std::stoi(next());
    } else {
      Die("unknown flag " + s);
    }
  }
  return a;
}

struct RunResult {
  double prefill_ms = 0, decode_ms = 0, step_ms_median = 0;
};

// The greedy token of sequence i from its top-1 candidate records (the engine's path: the
// records are what leaves the GPU, one per vocabulary slice, joined on the host as the
// runner joins them).
int32_t CandidateToken(const PhiStepOutput& o, size_t i) {
  const int idx = o.candidate_record[i];
  if (idx < 0) Die("no candidate record for a sequence");
  phi::worker::CandidateShard top;
  const char* rec = o.candidate_records.data() +
                    static_cast<size_t>(idx) * CandidateRecordBytes(o.candidate_stride);
  if (!phi::worker::cuda::ShardFromSliceRecords(rec, o.candidate_records.size() / o.candidate_slices,
                                                o.candidate_stride, o.candidate_slices, 1, &top)) {
    Die("malformed candidate record");
  }
  if (top.ids.empty()) Die("empty candidate record");
  return top.ids[0];
}

// Without --candidates: the whole logits row comes to the host (the runner's path for rows
// without candidates) and the token is its argmax.
int32_t WholeRowToken(const PhiCudaModel& m, const PhiStepOutput& o, size_t i) {
  std::vector<float> row(m.config().vocab_size);
  Check(m.CopyLogits(o.first_row[i] + o.num_rows[i] - 1, 1, row.data()), "CopyLogits");
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// B sequences: prompts prefilled in chunks of up to max_tokens_per_step, then `gen` decode
// steps of the whole batch, greedy: from whole rows copied to the host, or with `candidates`
// as the engine runs it (Step's path: each row reduced to its top-1 record on the GPU, the
// token read from the record on the host).
RunResult RunBatch(PhiCudaModel& m, int batch, int prompt, int gen, bool candidates) {
  const int bs = m.options().block_size;
  const int blocks_per_seq = (prompt + gen + bs - 1) / bs;
  if (batch * blocks_per_seq > m.kv_num_blocks()) Die("KV cache too small for batch");
  std::vector<std::vector<int32_t>> tables(batch), toks(batch);
  uint32_t rng = 12345;
  for (int b = 0; b < batch; ++b) {
    tables[b].resize(blocks_per_seq);
    std::iota(tables[b].begin(), tables[b].end(), b * blocks_per_seq);
    toks[b].resize(prompt);
    for (int32_t& t : toks[b]) t = static_cast<int32_t>((rng = rng * 1664525u + 1013904223u) % 50000);
  }
  RunResult r;
  const int per_step = std::max(1, m.options().max_tokens_per_step / prompt);
  double t0 = NowMs();
  for (int b0 = 0; b0 < batch; b0 += per_step) {
    std::vector<PhiSeqInput> in;
    for (int b = b0; b < std::min(batch, b0 + per_step); ++b) {
      PhiSeqInput s;
      s.tokens = toks[b];
      s.block_table = tables[b];
      s.num_candidates = candidates ? 1 : 0;
      in.push_back(s);
    }
    PhiStepOutput o;
    Check(m.Forward(in, &o), "prefill");
    for (size_t i = 0; i < in.size(); ++i) {
      toks[b0 + i].push_back(candidates ? CandidateToken(o, i) : WholeRowToken(m, o, i));
    }
  }
  r.prefill_ms = NowMs() - t0;
  std::vector<double> steps;
  t0 = NowMs();
  for (int g = 1; g < gen; ++g) {
    std::vector<PhiSeqInput> in(batch);
    for (int b = 0; b < batch; ++b) {
      in[b].tokens = std::span<const int32_t>(toks[b]).subspan(toks[b].size() - 1);
      in[b].start_pos = static_cast<int>(toks[b].size()) - 1;
      in[b].block_table = tables[b];
      in[b].num_candidates = candidates ? 1 : 0;
    }
    PhiStepOutput o;
    const double s0 = NowMs();
    Check(m.Forward(in, &o), "decode");
    steps.push_back(NowMs() - s0);
    for (int b = 0; b < batch; ++b) {
      toks[b].push_back(candidates ? CandidateToken(o, b) : WholeRowToken(m, o, b));
    }
  }
  r.decode_ms = NowMs() - t0;
  r.step_ms_median = steps.empty() ? 0.0 : Median(steps);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::printf("device: %s, %d SMs, %.1f GiB, L2 %d MiB, CUDA driver API %d, runtime %d\n",
              prop.name, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0,
              prop.l2CacheSize >> 20, driver, runtime);

  const double bw = CopyBandwidth();
  const double flops = GemmRate();
  std::printf("ceiling: device copy %.0f GB/s (read+write); bf16 GEMM 8192^3 %.0f TFLOP/s\n",
              bw / 1e9, flops / 1e12);
  if (args.breakdown) Breakdown(bw);

  PhiCudaConfig c;  // the real Phi-1.5 shape
  PhiCudaOptions o;
  o.max_tokens_per_step = 2048;
  o.max_seqs = 256;
  o.max_logit_rows = 256;
  o.use_cuda_graphs = args.graphs;
  o.kv_dtype = args.kv_dtype;
  o.decode_partitions = args.decode_partitions;
  o.fuse_decode = args.fuse;
  o.programmatic_launch = args.pdl;
  o.tensor_core_prefill = args.tc_prefill;
  o.candidate_slices = args.candidate_slices;
  o.gemv_max_m = args.gemv_max_m;
  std::unique_ptr<PhiCudaModel> m;
  Check(PhiCudaModel::Create(c, o, &m), "PhiCudaModel::Create");
  Check(FillRandomWeights(*m, 7, 0.02f), "FillRandomWeights");
  const int max_batch = *std::max_element(args.batches.begin(), args.batches.end());
  const int blocks_needed =
      std::max(max_batch, 1) * ((args.prompt + args.gen + o.block_size - 1) / o.block_size) + 16;
  size_t free_b, total_b;
  cudaMemGetInfo(&free_b, &total_b);
  const int64_t kv_block_bytes = m->kv_block_bytes_for(o.block_size);
  const int fit = static_cast<int>(0.85 * free_b / kv_block_bytes);
  Check(m->AllocateKvCache(std::min(blocks_needed, fit)), "AllocateKvCache");
  // Bytes one decode token reads at batch 1: every weight except the embedding table (one
  // row of it).
  const double wbytes = static_cast<double>(m->weight_bytes()) -
                        2.0 * c.local_vocab() * c.hidden_size + 2.0 * c.hidden_size;
  const double params = static_cast<double>(c.ParameterCount());
  const double flop_per_token = 2.0 * (params - double(c.vocab_size) * c.hidden_size);
  const double kv_per_token = double(kv_block_bytes) / o.block_size;
  std::printf("model: Phi-1.5 shape, %.3f B params, %.2f GB read per batch-1 decode token, "
              "KV %d blocks x %.2f MB, graphs %s, batch-1 fusion %s, tokens %s\n",
              params / 1e9, wbytes / 1e9, m->kv_num_blocks(), kv_block_bytes / 1e6,
              args.graphs ? "on" : "off", args.fuse ? "on" : "off",
              args.candidates ? "from top-1 candidate records (the engine's Step path)"
                              : "argmax of whole rows copied to the host");

  std::printf("KV cache: %s, %.0f bytes per token (the limit column counts these); decode "
              "attention partitions: %s\n",
              kv_cache_dtype_name(args.kv_dtype), kv_per_token,
              args.decode_partitions == 0  ? "one block each"
              : args.decode_partitions < 0 ? "chosen from the batch"
                                           : std::to_string(args.decode_partitions).c_str());

  // TTFT at idle: one prompt, prefill plus the first sampled token.
  {
    RunResult warm = RunBatch(*m, 1, args.prompt, 2, args.candidates);
    (void)warm;
    std::vector<double> t;
    for (int i = 0; i < 5; ++i) t.push_back(RunBatch(*m, 1, args.prompt, 1, args.candidates).prefill_ms);
    const double ttft = Median(t);
    const double limit_ms = flop_per_token * args.prompt / flops * 1e3;
    std::printf("TTFT %d-token prompt: %.2f ms (GEMM-rate limit %.2f ms: %.0f%%)\n", args.prompt,
                ttft, limit_ms, 100.0 * limit_ms / ttft);
  }

  std::printf("\n| batch | prefill ms | decode ms/step | generated tok/s (decode) | "
              "tok/s incl. prefill | limit | of limit |\n|---|---|---|---|---|---|---|\n");
  for (int b : args.batches) {
    RunBatch(*m, b, args.prompt, 3, args.candidates);  // warm-up: plans and the graph for this bucket
    const RunResult r = RunBatch(*m, b, args.prompt, args.gen, args.candidates);
    const double step = r.step_ms_median;
    const double tps = b / (step * 1e-3);
    const double tps_all = double(b) * args.gen / ((r.prefill_ms + r.decode_ms) * 1e-3);
    // Decode step floor: the weights once per step plus every sequence's KV (mean context
    // prompt + gen/2) through the copy bandwidth, or the FLOPs of b tokens at the GEMM rate.
    const double kv_bytes = double(b) * (args.prompt + args.gen / 2.0) * kv_per_token;
    const double mem_ms = (wbytes + kv_bytes) / bw * 1e3;
    const double flop_ms = flop_per_token * b / flops * 1e3;
    const double floor_ms = std::max(mem_ms, flop_ms);
    std::printf("| %d | %.1f | %.3f | %.0f | %.0f | %.3f ms/step (%s) | %.0f%% |\n", b,
                r.prefill_ms, step, tps, tps_all, floor_ms,
                mem_ms > flop_ms ? "weights+KV bytes" : "GEMM rate", 100.0 * floor_ms / step);
    if (b == 1) {
      std::printf("|   | batch-1 decode: %.0f tok/s, %.3f ms/token; bandwidth limit %.0f tok/s "
                  "|||||\n",
                  1e3 / step, step, bw / wbytes);
    }
    double graph_us = 0.0;
    if (args.graphs && TimeGraphReplay(PhiCudaModelAccess::DecodeGraph(*m, b), m->stream(), 20, &graph_us)) {
      std::printf("|   | decode graph alone (replayed back to back): %.3f ms = %.0f%% of limit; "
                  "the step's other %.3f ms is host work and the copies around it |||||\n",
                  graph_us * 1e-3, 100.0 * floor_ms / (graph_us * 1e-3), step - graph_us * 1e-3);
    }
  }
  std::printf("\ngemm bias fallback used: %s; decode graphs captured: %d; programmatic launch "
              "%s\n",
              PhiCudaModelAccess::UsedGemmBiasFallback(*m) ? "yes" : "no", m->num_captured_graphs(),
              !args.pdl ? "off (--no-pdl)"
              : m->programmatic_launch_active() ? "on"
                                                : "FELL BACK to plain launches");
  return 0;
}
