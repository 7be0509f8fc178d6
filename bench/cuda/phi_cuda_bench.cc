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

#include "services/worker/backends/cuda/candidate_record.h"
#include "services/worker/backends/cuda/gemm_lt.h"
#include "services/worker/backends/cuda/kernels_cpu.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace {

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
using phi::worker::cuda::top_candidates_record_bytes;

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

// Time of one launch of `op(i)` inside a captured graph of `reps` launches (i = 0..reps-1),
// in microseconds: the cost it adds to a decode graph, node gap included.
template <typename Op>
double GraphUs(Op op, int reps = 96) {
  cudaStream_t s;
  Check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  for (int i = 0; i < 8; ++i) Check(op(i, s), "warm-up");
  Check(cudaStreamSynchronize(s), "sync");
  cudaGraph_t g;
  cudaGraphExec_t ge;
  Check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "capture");
  for (int i = 0; i < reps; ++i) Check(op(i, s), "op");
  Check(cudaStreamEndCapture(s, &g), "end capture");
  Check(cudaGraphInstantiate(&ge, g, 0), "instantiate");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 7; ++i) {
    cudaEventRecord(e0, s);
    Check(cudaGraphLaunch(ge, s), "launch");
    cudaEventRecord(e1, s);
    Check(cudaEventSynchronize(e1), "sync");
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i > 0) t.push_back(ms * 1e3 / reps);
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  return Median(t);
}

// Per-op cost at decode shapes of Phi-1.5 (weights rotated over 8 copies so L2 does not hold
// them), each with its bytes and the GB/s they imply.
void Breakdown(double bw) {
  using namespace phi::worker::cuda;
  const int H = 2048, I = 8192, N1 = 3 * H + I, K2 = H + I, V = 51200, kCopies = 8;
  std::unique_ptr<GemmLt> g;
  Check(GemmLt::Create(32u << 20, &g), "GemmLt");
  auto dev = [](size_t bytes) {
    void* p;
    Check(cudaMalloc(&p, bytes), "cudaMalloc");
    Check(cudaMemset(p, 0, bytes), "memset");
    return p;
  };
  bf16* w1 = static_cast<bf16*>(dev(size_t{2} * N1 * H * kCopies));
  bf16* w2 = static_cast<bf16*>(dev(size_t{2} * H * K2 * kCopies));
  bf16* lm = static_cast<bf16*>(dev(size_t{2} * V * H));
  Check(fill_random_forward(w1, int64_t{N1} * H * kCopies, 5, 0.02f, nullptr), "fill");
  Check(fill_random_forward(w2, int64_t{H} * K2 * kCopies, 6, 0.02f, nullptr), "fill");
  Check(fill_random_forward(lm, int64_t{V} * H, 7, 0.02f, nullptr), "fill");
  bf16* b1 = static_cast<bf16*>(dev(2 * N1));
  float* b2 = static_cast<float*>(dev(4 * V));
  bf16* act = static_cast<bf16*>(dev(size_t{2} * 8 * K2));
  Check(fill_random_forward(act, int64_t{8} * K2, 8, 1.0f, nullptr), "fill");
  bf16* out1 = static_cast<bf16*>(dev(size_t{2} * 8 * N1));
  float* outf = static_cast<float*>(dev(size_t{4} * 8 * V));
  float* x = static_cast<float*>(dev(size_t{4} * 8 * H));
  bf16* ln_w = static_cast<bf16*>(dev(2 * H));
  // Attention: one sequence of 640 positions (the mean decode context of the throughput runs).
  const int ctx = 640, bs = 16, nb = ctx / bs;
  bf16* kc = static_cast<bf16*>(dev(size_t{2} * nb * 32 * bs * 64 * kCopies));
  bf16* vc = static_cast<bf16*>(dev(size_t{2} * nb * 32 * bs * 64 * kCopies));
  Check(fill_random_forward(kc, int64_t{nb} * 32 * bs * 64 * kCopies, 9, 1.0f, nullptr), "fill");
  Check(fill_random_forward(vc, int64_t{nb} * 32 * bs * 64 * kCopies, 10, 1.0f, nullptr), "fill");
  std::vector<int32_t> table_h(128, 0);
  std::iota(table_h.begin(), table_h.begin() + nb, 0);
  int32_t* table = static_cast<int32_t*>(dev(4 * 128));
  int32_t* ints = static_cast<int32_t*>(dev(4 * 16));
  cudaMemcpy(table, table_h.data(), 4 * 128, cudaMemcpyHostToDevice);
  // context len, position, slot, token (also row 0 for top candidates), count 1, want lse
  const int32_t ints_h[6] = {ctx, ctx - 1, (ctx - 1), 0, 1, 1};
  cudaMemcpy(ints, ints_h, sizeof(ints_h), cudaMemcpyHostToDevice);
  float* ws = static_cast<float*>(dev(4 * attention_decode_workspace_floats(256, 32, 2048)));
  unsigned int* counters = static_cast<unsigned int*>(dev(4 * 256 * 32));
  SamplingParams sp_h;
  SamplingParams* sp = static_cast<SamplingParams*>(dev(sizeof(SamplingParams)));
  cudaMemcpy(sp, &sp_h, sizeof(sp_h), cudaMemcpyHostToDevice);
  int32_t* tok = static_cast<int32_t*>(dev(64));
  float* lp = static_cast<float*>(dev(64));
  char* cand = static_cast<char*>(dev(64 * top_candidates_record_bytes(1)));
  Check(fill_random_forward(outf, int64_t{V}, 11, 4.0f, nullptr), "fill");
  Check(cudaDeviceSynchronize(), "sync");

  struct Row { std::string name; double us; double bytes; };
  std::vector<Row> rows;
  for (int m : {1, 2, 4, 8}) {
    for (bool small : {true, false}) {
      g->set_small_m_max(small ? kGemvMaxM : 0);
      const std::string tag = std::string(small ? "gemv" : "cublasLt") + " M=" + std::to_string(m);
      rows.push_back({"qkv|fc1 GEMM 2048->14336 " + tag, GraphUs([&](int i, cudaStream_t s) {
        return g->Matmul(act, w1 + size_t(i % kCopies) * N1 * H, b1, out1, false, 0.0f, m, N1, H, s);
      }), 2.0 * N1 * H});
      rows.push_back({"dense|fc2 GEMM 10240->2048 +resid " + tag, GraphUs([&](int i, cudaStream_t s) {
        return g->Matmul(act, w2 + size_t(i % kCopies) * H * K2, b2, x, true, 1.0f, m, H, K2, s);
      }), 2.0 * H * K2});
      rows.push_back({"lm_head GEMM 2048->51200 " + tag, GraphUs([&](int, cudaStream_t s) {
        return g->Matmul(act, lm, b2, outf, true, 0.0f, m, V, H, s);
      }, 16), 2.0 * V * H});
    }
  }
  g->set_small_m_max(1);
  // The one-token GEMV by split and resident blocks per SM (0: all the GPU holds), each
  // launch a programmatic dependent of the one before or not, and with its fused prologues.
  {
    struct Gemv1Shape {
      const char* name;
      int n, k;
      bool f32;
    };
    const Gemv1Shape shapes[] = {{"qkv|fc1 2048->14336", N1, H, false},
                                 {"dense|fc2 10240->2048 +resid", H, K2, true},
                                 {"lm_head 2048->51200", V, H, true}};
    auto args_for = [&](const Gemv1Shape& sh, int i) {
      Gemv1Args a;
      a.a = act;
      a.w = sh.n == N1 ? w1 + size_t(i % kCopies) * N1 * H
            : sh.n == H ? w2 + size_t(i % kCopies) * H * K2
                        : lm;
      a.bias = sh.f32 ? static_cast<const void*>(b2) : b1;
      a.d = sh.f32 ? static_cast<void*>(sh.n == H ? x : outf) : out1;
      a.d_f32 = sh.f32;
      a.beta = sh.n == H ? 1.0f : 0.0f;
      a.n = sh.n;
      a.k = sh.k;
      a.first_col = sh.n == H ? H : 0;  // W2: the attention columns last, as the model sums
      return a;
    };
    std::printf("\n| gemv1 (one token) | split | blocks/SM | us | us with PDL | of copy bw (best) |\n"
                "|---|---|---|---|---|---|\n");
    for (const Gemv1Shape& sh : shapes) {
      const int def = gemv1_default_split(1, sh.n, sh.k);
      for (int split : {1, 2, 4, 8}) {
        if (sh.k / 8 < 32 * split) continue;
        for (int per_sm : {1, 2, 3, 0}) {
          double us[2];
          for (int pdl = 0; pdl < 2; ++pdl) {
            us[pdl] = GraphUs([&](int i, cudaStream_t s) {
              Gemv1Args a = args_for(sh, i);
              a.split = split;
              a.blocks_per_sm = per_sm;
              a.pdl = pdl == 1;
              return gemv1_forward(a, s);
            }, sh.n == V ? 16 : 96);
          }
          const double best = std::min(us[0], us[1]);
          std::printf("| %s | %d%s | %s | %.2f | %.2f | %.0f%% |\n", sh.name, split,
                      split == def ? " (default)" : "",
                      per_sm == 0 ? "all" : std::to_string(per_sm).c_str(), us[0], us[1],
                      100.0 * 2.0 * sh.n * sh.k / (best * 1e-6) / bw);
        }
      }
    }
    // The tensor-core form (2..8 tokens) at M = 8 by split, grid as the GPU holds.
    std::printf("\n| gemv1 tiles, M=8 | split | us | of copy bw |\n|---|---|---|---|\n");
    for (const Gemv1Shape& sh : shapes) {
      const int def = gemv1_default_split(8, sh.n, sh.k);
      for (int split : {1, 2, 4, 8}) {
        const double us = GraphUs([&](int i, cudaStream_t s) {
          Gemv1Args a = args_for(sh, i);
          a.m = 8;
          a.split = split;
          return gemv1_forward(a, s);
        }, sh.n == V ? 16 : 96);
        std::printf("| %s | %d%s | %.2f | %.0f%% |\n", sh.name, split,
                    split == def ? " (default)" : "", us,
                    100.0 * 2.0 * sh.n * sh.k / (us * 1e-6) / bw);
      }
    }
    // The fused prologues as the model runs them (default split and grid, PDL), at one token
    // and at eight.
    for (int m : {1, 8}) {
      const std::string tag = " (gemv1 M=" + std::to_string(m) + ", PDL)";
      rows.push_back({"LayerNorm + qkv|fc1 fused" + tag, GraphUs([&](int i, cudaStream_t s) {
        Gemv1Args a = args_for(shapes[0], i);
        a.m = m;
        a.prologue = GemvPrologue::kLayerNorm;
        a.x = x; a.gamma = ln_w; a.beta_ln = ln_w; a.pdl = true;
        return gemv1_forward(a, s);
      }), 2.0 * N1 * H});
      rows.push_back({"gelu + dense|fc2 fused +resid" + tag, GraphUs([&](int i, cudaStream_t s) {
        Gemv1Args a = args_for(shapes[1], i);
        a.m = m;
        a.prologue = GemvPrologue::kGeluConcat;
        a.a = act; a.a_cols = H; a.f = out1 + 3 * H; a.f_cols = I; a.f_stride = N1; a.pdl = true;
        return gemv1_forward(a, s);
      }), 2.0 * H * K2});
    }
  }
  rows.push_back({"layernorm 1x2048", GraphUs([&](int, cudaStream_t s) {
    return layernorm_forward(x, nullptr, ln_w, ln_w, out1, 1, H, 1e-5f, s);
  }), 4.0 * H + 2.0 * H});
  rows.push_back({"rotary+KV write 1 token", GraphUs([&](int i, cudaStream_t s) {
    RotaryKvArgs r;
    r.qkv = out1; r.row_stride = N1; r.positions = ints + 1; r.slots = ints + 2;
    r.k_cache = kc + size_t(i % kCopies) * nb * 32 * bs * 64;
    r.v_cache = vc + size_t(i % kCopies) * nb * 32 * bs * 64;
    r.num_tokens = 1; r.num_heads = 32; r.head_dim = 64; r.rotary_dim = 32; r.block_size = bs;
    return rotary_kv_forward(r, s);
  }), 3.0 * 2 * H});
  for (int max_ctx : {640, 2048}) {
    rows.push_back({"attention decode ctx 640, max_ctx " + std::to_string(max_ctx), GraphUs([&](int i, cudaStream_t s) {
      PagedAttentionArgs a;
      a.q = out1; a.q_stride = N1;
      a.k_cache = kc + size_t(i % kCopies) * nb * 32 * bs * 64;
      a.v_cache = vc + size_t(i % kCopies) * nb * 32 * bs * 64;
      a.block_tables = table; a.max_blocks_per_seq = 128; a.out = act; a.out_stride = K2;
      a.num_seqs = 1; a.num_heads = 32; a.head_dim = 64; a.block_size = bs; a.scale = 0.125f;
      return attention_decode(a, ints, max_ctx, ws, counters, s);
    }), 2.0 * ctx * 2 * H});
  }
  {
    // Batch 64 at context 640: every sequence its own blocks (KV read once, from HBM).
    const int B = 64, nbs = 40;
    bf16* kb = static_cast<bf16*>(dev(size_t{2} * B * nbs * 32 * bs * 64));
    bf16* vb = static_cast<bf16*>(dev(size_t{2} * B * nbs * 32 * bs * 64));
    Check(fill_random_forward(kb, int64_t{B} * nbs * 32 * bs * 64, 12, 1.0f, nullptr), "fill");
    Check(fill_random_forward(vb, int64_t{B} * nbs * 32 * bs * 64, 13, 1.0f, nullptr), "fill");
    std::vector<int32_t> tb(B * 128, 0), lens(B, ctx), qo(B), st(B, 0), nn(B, 512);
    for (int b = 0; b < B; ++b) {
      for (int j = 0; j < nbs; ++j) tb[b * 128 + j] = b * nbs + j;
      qo[b] = b * 512;
    }
    int32_t* dtb = static_cast<int32_t*>(dev(4 * tb.size()));
    int32_t* dl = static_cast<int32_t*>(dev(4 * B * 8));
    cudaMemcpy(dtb, tb.data(), 4 * tb.size(), cudaMemcpyHostToDevice);
    cudaMemcpy(dl, lens.data(), 4 * B, cudaMemcpyHostToDevice);
    bf16* q = static_cast<bf16*>(dev(size_t{2} * 512 * N1));
    bf16* o = static_cast<bf16*>(dev(size_t{2} * 512 * K2));
    Check(fill_random_forward(q, int64_t{512} * N1, 14, 1.0f, nullptr), "fill");
    PagedAttentionArgs a;
    a.q = q; a.q_stride = N1; a.k_cache = kb; a.v_cache = vb; a.block_tables = dtb;
    a.max_blocks_per_seq = 128; a.out = o; a.out_stride = K2; a.num_seqs = B; a.num_heads = 32;
    a.head_dim = 64; a.block_size = bs; a.scale = 0.125f;
    rows.push_back({"attention decode batch 64 ctx 640 (max_ctx 2048)", GraphUs([&](int, cudaStream_t s) {
      return attention_decode(a, dl, 2048, ws, counters, s);
    }, 16), 2.0 * B * ctx * 2 * H});
    // The same over an FP8 cache (the BF16 buffers' bytes read as E4M3 codes: timing only).
    PagedAttentionArgs a8 = a;
    a8.kv_dtype = KvCacheDtype::kFp8E4m3;
    rows.push_back({"attention decode fp8 batch 64 ctx 640 (max_ctx 2048)", GraphUs([&](int, cudaStream_t s) {
      return attention_decode(a8, dl, 2048, ws, counters, s);
    }, 16), 1.0 * B * ctx * 2 * H});
    // The same two with the grid's partitions chosen from the batch (decode_partitions -1):
    // blocks loop over partitions instead of 11 of every 16 finding nothing past 640.
    PagedAttentionArgs aa = a, aa8 = a8;
    aa.decode_partitions = aa8.decode_partitions = -1;
    const std::string z = std::to_string(attention_decode_grid_partitions(aa, 2048));
    rows.push_back({"attention decode batch 64 ctx 640 (max_ctx 2048), grid z " + z, GraphUs([&](int, cudaStream_t s) {
      return attention_decode(aa, dl, 2048, ws, counters, s);
    }, 16), 2.0 * B * ctx * 2 * H});
    rows.push_back({"attention decode fp8 batch 64 ctx 640 (max_ctx 2048), grid z " + z, GraphUs([&](int, cudaStream_t s) {
      return attention_decode(aa8, dl, 2048, ws, counters, s);
    }, 16), 1.0 * B * ctx * 2 * H});
    // Prefill: one 512-token prompt (sequence 0's first 32 blocks), causal.
    std::vector<int32_t> ts, tf;
    const int32_t n512[] = {512};
    prefill_tiles_cpu(n512, 1, &ts, &tf);
    int32_t* meta = static_cast<int32_t*>(dev(4 * 64));
    std::vector<int32_t> mh = {0, 0, 512};
    mh.insert(mh.end(), ts.begin(), ts.end());
    mh.insert(mh.end(), tf.begin(), tf.end());
    cudaMemcpy(meta, mh.data(), 4 * mh.size(), cudaMemcpyHostToDevice);
    PrefillTiles t;
    t.q_offset = meta; t.start_pos = meta + 1; t.num_new = meta + 2; t.tile_seq = meta + 3;
    t.tile_first = meta + 3 + ts.size(); t.num_tiles = static_cast<int>(ts.size());
    PagedAttentionArgs pa = a;
    pa.num_seqs = 1;
    // FLOPs: QK^T and PV over the causal half, 32 heads.
    const double pf_flop = 2.0 * 2 * 32 * 64 * (512.0 * 513 / 2);
    for (bool tc : {true, false}) {
      pa.tensor_cores = tc;
      const double pf_us = GraphUs([&](int, cudaStream_t s) { return attention_prefill(pa, t, s); }, 8);
      std::printf("prefill attention 512 tokens: %.1f us per layer, %.1f TFLOP/s (%s)\n", pf_us,
                  pf_flop / (pf_us * 1e-6) / 1e12, tc ? "mma.sync tensor cores" : "FP32 FMA");
    }
    cudaDeviceSynchronize();
    for (void* p : {static_cast<void*>(kb), static_cast<void*>(vb), static_cast<void*>(dtb),
                    static_cast<void*>(dl), static_cast<void*>(q),
                    static_cast<void*>(o), static_cast<void*>(meta)}) {
      cudaFree(p);
    }
  }
  rows.push_back({"gelu 1x8192", GraphUs([&](int, cudaStream_t s) {
    return gelu_forward(out1 + 3 * H, N1, act + H, K2, 1, I, s);
  }), 4.0 * I});
  rows.push_back({"embedding 1 token", GraphUs([&](int, cudaStream_t s) {
    return embedding_forward(ints + 3, lm, x, 1, V, H, s);
  }), 6.0 * H});
  rows.push_back({"sample greedy 1x51200", GraphUs([&](int, cudaStream_t s) {
    SampleArgs a;
    a.logits = outf; a.rows = 1; a.vocab = V; a.vocab_limit = 50295; a.params = sp;
    a.out_token = tok; a.out_logprob = lp;
    return sample_forward(a, s);
  }), 4.0 * V});
  // The engine's batch-1 token: the top-1 record (with log-sum-exp) of one row, by one block
  // and in the vocabulary slices the model would choose (PhiCudaOptions::candidate_slices).
  for (int slices : {1, top_candidates_slices(1, V, 1, 64)}) {
    rows.push_back({"top-1 candidate + lse 1x51200, " + std::to_string(slices) + " slice(s)",
                    GraphUs([&](int, cudaStream_t s) {
                      TopCandidatesArgs a;
                      a.logits = outf; a.ld = a.width = V; a.vocab_limit = 50295;
                      a.rows = ints + 3; a.counts = ints + 4; a.want_lse = ints + 5;
                      a.num_rows = 1; a.max_count = 1; a.slices = slices; a.out = cand;
                      return top_candidates_forward(a, s);
                    }), 4.0 * V});
  }
  std::printf("\n| op (in a graph, per launch) | us | MB | GB/s | of copy bw |\n|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %.2f | %.2f | %.0f | %.0f%% |\n", r.name.c_str(), r.us, r.bytes / 1e6,
                r.bytes / (r.us * 1e-6) / 1e9, 100.0 * r.bytes / (r.us * 1e-6) / bw);
  }
  Check(cudaDeviceSynchronize(), "sync");
  for (void* p : {static_cast<void*>(w1), static_cast<void*>(w2), static_cast<void*>(lm),
                  static_cast<void*>(b1), static_cast<void*>(b2), static_cast<void*>(act),
                  static_cast<void*>(out1), static_cast<void*>(outf), static_cast<void*>(x),
                  static_cast<void*>(ln_w), static_cast<void*>(kc), static_cast<void*>(vc),
                  static_cast<void*>(table), static_cast<void*>(ints), static_cast<void*>(ws),
                  static_cast<void*>(counters),
                  static_cast<void*>(sp), static_cast<void*>(tok), static_cast<void*>(lp),
                  static_cast<void*>(cand)}) {
    cudaFree(p);
  }
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
                    static_cast<size_t>(idx) * top_candidates_record_bytes(o.candidate_stride);
  if (!phi::worker::cuda::ShardFromSliceRecords(rec, o.candidate_records.size() / o.candidate_slices,
                                                o.candidate_stride, o.candidate_slices, 1, &top)) {
    Die("malformed candidate record");
  }
  if (top.ids.empty()) Die("empty candidate record");
  return top.ids[0];
}

// B sequences: prompts prefilled in chunks of up to max_tokens_per_step, then `gen` decode
// steps of the whole batch, greedy: sampled on the GPU (Forward with sample), or with
// `candidates` as the engine runs it (Step's path: each row reduced to its top-1 record on
// the GPU, the token read from the record on the host).
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
    Check(m.Forward(in, !candidates, &o), "prefill");
    for (size_t i = 0; i < in.size(); ++i) toks[b0 + i].push_back(candidates ? CandidateToken(o, i) : o.tokens[i]);
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
    Check(m.Forward(in, !candidates, &o), "decode");
    steps.push_back(NowMs() - s0);
    for (int b = 0; b < batch; ++b) toks[b].push_back(candidates ? CandidateToken(o, b) : o.tokens[b]);
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
  c.tokenizer_vocab_size = 50295;
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
              "KV %d blocks x %.2f MB, graphs %s, batch-1 fusion %s, tokens %s\n",
              params / 1e9, wbytes / 1e9, m->kv_num_blocks(), m->kv_block_bytes() / 1e6,
              args.graphs ? "on" : "off", args.fuse ? "on" : "off",
              args.candidates ? "from top-1 candidate records (the engine's Step path)" : "sampled on the GPU");

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
    if (args.graphs && m->TimeDecodeGraph(b, 20, &graph_us).ok()) {
      std::printf("|   | decode graph alone (replayed back to back): %.3f ms = %.0f%% of limit; "
                  "the step's other %.3f ms is host work and the copies around it |||||\n",
                  graph_us * 1e-3, 100.0 * floor_ms / (graph_us * 1e-3), step - graph_us * 1e-3);
    }
  }
  std::printf("\ngemm bias fallback used: %s; decode graphs captured: %d; programmatic launch "
              "%s\n",
              m->gemm().used_bias_fallback() ? "yes" : "no", m->num_captured_graphs(),
              !args.pdl ? "off (--no-pdl)"
              : m->programmatic_launch_active() ? "on"
                                                : "FELL BACK to plain launches");
  return 0;
}
