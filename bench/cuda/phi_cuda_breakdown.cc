// phi_cuda_bench --breakdown: the cost of each operation of a decode step at Phi-1.5's
// shapes, inside CUDA graphs, against the copy bandwidth (and the decode GEMV's settings).
#include "bench/cuda/phi_cuda_breakdown.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.h"
#include "bench/cuda/fill_random.h"
#include "services/worker/backends/cuda/gemm_lt.h"
#include "services/worker/backends/cuda/kernels.h"

namespace phi::bench {

// Per-op cost at decode shapes of Phi-1.5 (weights rotated over 8 copies so L2 does not hold
// them), each with its bytes and the GB/s they imply.
void Breakdown(double bw) {
  using namespace phi::worker::cuda;
  using phi::worker::CandidateRecordBytes;
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
  char* cand = static_cast<char*>(dev(64 * CandidateRecordBytes(1)));
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
    struct DecodeGemvShape {
      const char* name;
      int n, k;
      bool f32;
    };
    const DecodeGemvShape shapes[] = {{"qkv|fc1 2048->14336", N1, H, false},
                                 {"dense|fc2 10240->2048 +resid", H, K2, true},
                                 {"lm_head 2048->51200", V, H, true}};
    auto args_for = [&](const DecodeGemvShape& sh, int i) {
      DecodeGemvArgs a;
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
    std::printf("\n| decode GEMV (one token) | split | blocks/SM | us | us with PDL | of copy bw (best) |\n"
                "|---|---|---|---|---|---|\n");
    for (const DecodeGemvShape& sh : shapes) {
      const int def = decode_gemv_default_split(1, sh.n, sh.k);
      for (int split : {1, 2, 4, 8}) {
        if (sh.k / 8 < 32 * split) continue;
        for (int per_sm : {1, 2, 3, 0}) {
          double us[2];
          for (int pdl = 0; pdl < 2; ++pdl) {
            us[pdl] = GraphUs([&](int i, cudaStream_t s) {
              DecodeGemvArgs a = args_for(sh, i);
              a.split = split;
              a.blocks_per_sm = per_sm;
              a.pdl = pdl == 1;
              return decode_gemv_forward(a, s);
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
    std::printf("\n| decode GEMV tiles, M=8 | split | us | of copy bw |\n|---|---|---|---|\n");
    for (const DecodeGemvShape& sh : shapes) {
      const int def = decode_gemv_default_split(8, sh.n, sh.k);
      for (int split : {1, 2, 4, 8}) {
        const double us = GraphUs([&](int i, cudaStream_t s) {
          DecodeGemvArgs a = args_for(sh, i);
          a.m = 8;
          a.split = split;
          return decode_gemv_forward(a, s);
        }, sh.n == V ? 16 : 96);
        std::printf("| %s | %d%s | %.2f | %.0f%% |\n", sh.name, split,
                    split == def ? " (default)" : "", us,
                    100.0 * 2.0 * sh.n * sh.k / (us * 1e-6) / bw);
      }
    }
    // The fused prologues as the model runs them (default split and grid, PDL), at one token
    // and at eight.
    for (int m : {1, 8}) {
      const std::string tag = " (decode GEMV M=" + std::to_string(m) + ", PDL)";
      rows.push_back({"LayerNorm + qkv|fc1 fused" + tag, GraphUs([&](int i, cudaStream_t s) {
        DecodeGemvArgs a = args_for(shapes[0], i);
        a.m = m;
        a.prologue = GemvPrologue::kLayerNorm;
        a.x = x; a.gamma = ln_w; a.beta_ln = ln_w; a.pdl = true;
        return decode_gemv_forward(a, s);
      }), 2.0 * N1 * H});
      rows.push_back({"gelu + dense|fc2 fused +resid" + tag, GraphUs([&](int i, cudaStream_t s) {
        DecodeGemvArgs a = args_for(shapes[1], i);
        a.m = m;
        a.prologue = GemvPrologue::kGeluConcat;
        a.a = act; a.a_cols = H; a.f = out1 + 3 * H; a.f_cols = I; a.f_stride = N1; a.pdl = true;
        return decode_gemv_forward(a, s);
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
    prefill_tiles(n512, 1, &ts, &tf);
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
                  static_cast<void*>(counters), static_cast<void*>(cand)}) {
    cudaFree(p);
  }
}

}  // namespace phi::bench
