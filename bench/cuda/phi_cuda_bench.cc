// Phi-1.5 on one GPU: the two ceilings (device copy bandwidth, BF16 GEMM rate), then batch-1
// decode, TTFT and generated tokens/s at several batch sizes for the real Phi-1.5 shape with
// random BF16 weights generated on the device (no file needed). Every figure is printed with
// its limit: decode against weight bytes / copy bandwidth, prefill and throughput against
// FLOPs / GEMM rate.
//   phi_cuda_bench [--batches 1,8,32,128,256] [--gen 256] [--prompt 512] [--no-graphs]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/gemm_lt.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace {

using phi::worker::cuda::bf16;
using phi::worker::cuda::CudaStatus;
using phi::worker::cuda::GemmLt;
using phi::worker::cuda::PhiCudaConfig;
using phi::worker::cuda::PhiCudaModel;
using phi::worker::cuda::PhiCudaOptions;
using phi::worker::cuda::PhiSeqInput;
using phi::worker::cuda::PhiStepOutput;

void Die(const std::string& what) {
  std::fprintf(stderr, "phi_cuda_bench: %s\n", what.c_str());
  std::exit(1);
}
void Check(const CudaStatus& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.message());
}
void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Die(std::string(what) + ": " + cudaGetErrorString(e));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Device-to-device copy of a buffer well past L2; bytes read plus written per second.
double CopyBandwidth() {
  const size_t bytes = size_t{2} << 30;
  void *a, *b;
  Check(cudaMalloc(&a, bytes), "cudaMalloc");
  Check(cudaMalloc(&b, bytes), "cudaMalloc");
  Check(phi::worker::cuda::fill_random_forward(static_cast<float*>(a), bytes / 4, 1, 1.0f, nullptr),
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
  Check(phi::worker::cuda::fill_random_forward(a, int64_t{n} * n, 2, 1.0f, nullptr), "fill");
  Check(phi::worker::cuda::fill_random_forward(w, int64_t{n} * n, 3, 1.0f, nullptr), "fill");
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
  std::vector<int> batches = {1, 8, 32, 128, 256};
  int gen = 256;
  int prompt = 512;
  bool graphs = true;
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
    } else if (s == "--no-graphs") {
      a.graphs = false;
    } else {
      Die("unknown flag " + s);
    }
  }
  return a;
}

struct RunResult {
  double prefill_ms = 0, decode_ms = 0, step_ms_median = 0;
};

// B sequences: prompts prefilled in chunks of up to max_tokens_per_step, then `gen` decode
// steps of the whole batch with greedy sampling on the GPU.
RunResult RunBatch(PhiCudaModel& m, int batch, int prompt, int gen) {
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
      in.push_back(s);
    }
    PhiStepOutput o;
    Check(m.Forward(in, true, &o), "prefill");
    for (size_t i = 0; i < in.size(); ++i) toks[b0 + i].push_back(o.tokens[i]);
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
    }
    PhiStepOutput o;
    const double s0 = NowMs();
    Check(m.Forward(in, true, &o), "decode");
    steps.push_back(NowMs() - s0);
    for (int b = 0; b < batch; ++b) toks[b].push_back(o.tokens[b]);
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

  PhiCudaConfig c;  // the real Phi-1.5 shape
  c.tokenizer_vocab_size = 50295;
  PhiCudaOptions o;
  o.max_tokens_per_step = 2048;
  o.max_seqs = 256;
  o.max_logit_rows = 256;
  o.use_cuda_graphs = args.graphs;
  std::unique_ptr<PhiCudaModel> m;
  Check(PhiCudaModel::Create(c, o, &m), "PhiCudaModel::Create");
  Check(m->FillRandomWeights(7, 0.02f), "FillRandomWeights");
  const int max_batch = *std::max_element(args.batches.begin(), args.batches.end());
  const int blocks_needed =
      std::max(max_batch, 1) * ((args.prompt + args.gen + o.block_size - 1) / o.block_size) + 16;
  size_t free_b, total_b;
  cudaMemGetInfo(&free_b, &total_b);
  const int fit = static_cast<int>(0.85 * free_b / m->kv_block_bytes());
  Check(m->AllocateKvCache(std::min(blocks_needed, fit)), "AllocateKvCache");
  const double wbytes = static_cast<double>(m->decode_bytes_per_token());
  const double params = static_cast<double>(c.ParameterCount());
  const double flop_per_token = 2.0 * (params - double(c.vocab_size) * c.hidden_size);
  const double kv_per_token = double(m->kv_block_bytes()) / o.block_size;
  std::printf("model: Phi-1.5 shape, %.3f B params, %.2f GB read per batch-1 decode token, "
              "KV %d blocks x %.2f MB, graphs %s\n",
              params / 1e9, wbytes / 1e9, m->kv_num_blocks(), m->kv_block_bytes() / 1e6,
              args.graphs ? "on" : "off");

  // TTFT at idle: one prompt, prefill plus the first sampled token.
  {
    RunResult warm = RunBatch(*m, 1, args.prompt, 2);
    (void)warm;
    std::vector<double> t;
    for (int i = 0; i < 5; ++i) t.push_back(RunBatch(*m, 1, args.prompt, 1).prefill_ms);
    const double ttft = Median(t);
    const double limit_ms = flop_per_token * args.prompt / flops * 1e3;
    std::printf("TTFT %d-token prompt: %.2f ms (GEMM-rate limit %.2f ms: %.0f%%)\n", args.prompt,
                ttft, limit_ms, 100.0 * limit_ms / ttft);
  }

  std::printf("\n| batch | prefill ms | decode ms/step | generated tok/s (decode) | "
              "tok/s incl. prefill | limit | of limit |\n|---|---|---|---|---|---|---|\n");
  for (int b : args.batches) {
    RunBatch(*m, b, args.prompt, 3);  // warm-up: plans and the graph for this bucket
    const RunResult r = RunBatch(*m, b, args.prompt, args.gen);
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
  }
  std::printf("\ngemm bias fallback used: %s; decode graphs captured: %d\n",
              m->gemm().used_bias_fallback() ? "yes" : "no", m->num_captured_graphs());
  return 0;
}
