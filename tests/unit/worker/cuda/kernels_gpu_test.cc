// Each CUDA kernel against its CPU twin on seeded random inputs and awkward shapes
// (one token, lengths not a multiple of the block size, odd batch sizes). Label: gpu; every
// test skips with the reason when no GPU is present.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "services/worker/backends/cuda/gemm_lt.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"

namespace phi::worker::cuda {
namespace {

using testing::DeviceBuffer;
using testing::kTolBf16;
using testing::kTolF32;
using testing::RandomBf16Values;
using testing::RelNormError;
using testing::ToBf16;
using testing::ToF32;

TEST(LayerNormGpu, MatchesCpuTwinWithAndWithoutGather) {
  PHI_REQUIRE_GPU();
  struct Shape { int rows, dim; };
  for (Shape s : {Shape{1, 2048}, Shape{7, 2048}, Shape{3, 100}, Shape{5, 33}}) {
    SCOPED_TRACE("rows=" + std::to_string(s.rows) + " dim=" + std::to_string(s.dim));
    std::vector<float> x = RandomBf16Values(static_cast<size_t>(s.rows) * s.dim, 11, 3.0f);
    for (float& v : x) v += 0.5f;  // a non-zero mean
    const std::vector<float> g = RandomBf16Values(s.dim, 12, 1.0f);
    const std::vector<float> b = RandomBf16Values(s.dim, 13, 0.5f);
    std::vector<int32_t> idx(s.rows);
    for (int r = 0; r < s.rows; ++r) idx[r] = (s.rows - 1 - r);  // reversed gather
    DeviceBuffer<float> dx(x.size());
    DeviceBuffer<bf16> dg(s.dim), db(s.dim), dout(x.size());
    DeviceBuffer<int32_t> didx(s.rows);
    dx.Upload(x);
    dg.Upload(ToBf16(g));
    db.Upload(ToBf16(b));
    didx.Upload(idx);
    for (bool gather : {false, true}) {
      dout.Poison();
      PHI_ASSERT_CUDA_OK(layernorm_forward(dx.get(), gather ? didx.get() : nullptr, dg.get(),
                                           db.get(), dout.get(), s.rows, s.dim, 1e-5f, nullptr));
      PHI_ASSERT_CUDART(cudaDeviceSynchronize());
      std::vector<float> want(x.size());
      layernorm_forward_cpu(x.data(), gather ? idx.data() : nullptr, g.data(), b.data(),
                            want.data(), s.rows, s.dim, 1e-5f);
      EXPECT_LT(RelNormError(ToF32(dout.Download()), want), kTolBf16) << "gather=" << gather;
    }
  }
}

// The GPU embedding of `tokens` from a random table of `vocab` rows (ids vocab_begin ..
// vocab_begin + vocab - 1) equals the CPU twin exactly: it is a pure copy.
void CheckEmbedding(int vocab, int dim, int vocab_begin, const std::vector<int32_t>& tokens, uint32_t seed) {
  const std::vector<float> table = RandomBf16Values(static_cast<size_t>(vocab) * dim, seed);
  DeviceBuffer<bf16> dt(table.size());
  DeviceBuffer<int32_t> dtok(tokens.size());
  DeviceBuffer<float> dx(tokens.size() * dim);
  dt.Upload(ToBf16(table));
  dtok.Upload(tokens);
  dx.Poison();
  PHI_ASSERT_CUDA_OK(embedding_forward(dtok.get(), dt.get(), dx.get(),
                                       static_cast<int>(tokens.size()), vocab, dim, nullptr,
                                       vocab_begin));
  PHI_ASSERT_CUDART(cudaDeviceSynchronize());
  std::vector<float> want(tokens.size() * dim);
  embedding_forward_cpu(tokens.data(), table.data(), want.data(),
                        static_cast<int>(tokens.size()), vocab, dim, vocab_begin);
  EXPECT_EQ(dx.Download(), want);
}

TEST(EmbeddingGpu, GathersRowsAndZeroesBadIds) {
  PHI_REQUIRE_GPU();
  CheckEmbedding(/*vocab=*/97, /*dim=*/130, /*vocab_begin=*/0, {5, 0, 96, 5, -1, 97, 42}, 21);
}

// A rank's vocabulary slice (tensor parallelism): ids of other slices write zeros.
TEST(EmbeddingGpu, VocabSliceGathersOnlyItsRows) {
  PHI_REQUIRE_GPU();
  // Rank 1 of a 99-id vocabulary split by 3.
  CheckEmbedding(/*vocab=*/33, /*dim=*/70, /*vocab_begin=*/33, {32, 33, 65, 66, 40, 0, 98}, 22);
}

struct RotaryCase { int tokens, heads, head_dim, rotary_dim, block_size; };

TEST(RotaryKvGpu, RotatesQAndWritesPagedCache) {
  PHI_REQUIRE_GPU();
  for (RotaryCase c : {RotaryCase{1, 32, 64, 32, 16}, RotaryCase{37, 3, 64, 32, 16},
                       RotaryCase{5, 2, 64, 64, 7}, RotaryCase{9, 1, 64, 0, 16},
                       RotaryCase{4, 5, 32, 16, 4}}) {
    SCOPED_TRACE("tokens=" + std::to_string(c.tokens) + " heads=" + std::to_string(c.heads) +
                 " rotary_dim=" + std::to_string(c.rotary_dim));
    const int hd = c.heads * c.head_dim, stride = 3 * hd + 24;  // extra columns (fc1) untouched
    const int num_blocks = (c.tokens + c.block_size - 1) / c.block_size + 3;
    std::vector<float> qkv = RandomBf16Values(static_cast<size_t>(c.tokens) * stride, 31);
    std::mt19937 rng(32);
    std::vector<int32_t> slots(num_blocks * c.block_size);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    slots.resize(c.tokens);
    std::vector<int32_t> pos(c.tokens);
    for (int32_t& p : pos) p = static_cast<int32_t>(rng() % 2048);
    pos[0] = 2047;
    const size_t cache_n = static_cast<size_t>(num_blocks) * c.heads * c.block_size * c.head_dim;
    DeviceBuffer<bf16> dqkv(qkv.size()), dk(cache_n), dv(cache_n);
    DeviceBuffer<int32_t> dpos(c.tokens), dslots(c.tokens);
    dqkv.Upload(ToBf16(qkv));
    dpos.Upload(pos);
    dslots.Upload(slots);
    dk.Poison();
    dv.Poison();
    RotaryKvArgs a;
    a.qkv = dqkv.get();
    a.row_stride = stride;
    a.positions = dpos.get();
    a.slots = dslots.get();
    a.k_cache = dk.get();
    a.v_cache = dv.get();
    a.num_tokens = c.tokens;
    a.num_heads = c.heads;
    a.head_dim = c.head_dim;
    a.rotary_dim = c.rotary_dim;
    a.block_size = c.block_size;
    PHI_ASSERT_CUDA_OK(rotary_kv_forward(a, nullptr));
    PHI_ASSERT_CUDART(cudaDeviceSynchronize());
    std::vector<float> want_qkv = qkv, kc(cache_n, NAN), vc(cache_n, NAN);
    rotary_kv_forward_cpu(want_qkv.data(), stride, pos.data(), slots.data(), kc.data(),
                          vc.data(), c.tokens, c.heads, c.head_dim, c.rotary_dim, c.block_size,
                          10000.0f);
    // q (rotated in place) and the untouched k/v/fc1 columns.
    std::vector<float> got_qkv = ToF32(dqkv.Download());
    std::vector<float> got_q, want_q, got_rest, want_rest;
    for (int t = 0; t < c.tokens; ++t) {
      for (int col = 0; col < stride; ++col) {
        const size_t i = static_cast<size_t>(t) * stride + col;
        (col < hd ? got_q : got_rest).push_back(got_qkv[i]);
        (col < hd ? want_q : want_rest).push_back(col < hd ? want_qkv[i] : qkv[i]);
      }
    }
    EXPECT_LT(RelNormError(got_q, want_q), kTolBf16);
    EXPECT_EQ(got_rest, want_rest);
    // Written cache slots only (the rest stays poisoned on both sides).
    std::vector<float> gk = ToF32(dk.Download()), gv = ToF32(dv.Download());
    std::vector<float> gk_w, wk_w, gv_w, wv_w;
    for (size_t i = 0; i < cache_n; ++i) {
      if (std::isnan(kc[i])) {
        EXPECT_TRUE(std::isnan(gk[i])) << "unexpected K write at " << i;
        continue;
      }
      gk_w.push_back(gk[i]);
      wk_w.push_back(kc[i]);
      gv_w.push_back(gv[i]);
      wv_w.push_back(vc[i]);
    }
    ASSERT_EQ(gk_w.size(), static_cast<size_t>(c.tokens) * hd);
    EXPECT_LT(RelNormError(gk_w, wk_w), kTolBf16);
    EXPECT_EQ(gv_w, wv_w);  // V is a copy
  }
}

TEST(GeluGpu, MatchesCpuTwinStridedAndOdd) {
  PHI_REQUIRE_GPU();
  struct Shape { int rows, cols, in_stride, out_stride; };
  for (Shape s : {Shape{1, 8192, 14336, 10240}, Shape{3, 8192, 8192, 8192}, Shape{5, 33, 35, 40},
                  Shape{2, 7, 7, 7}}) {
    SCOPED_TRACE("rows=" + std::to_string(s.rows) + " cols=" + std::to_string(s.cols));
    const std::vector<float> in = RandomBf16Values(static_cast<size_t>(s.rows) * s.in_stride, 41, 6.0f);
    DeviceBuffer<bf16> din(in.size()), dout(static_cast<size_t>(s.rows) * s.out_stride);
    din.Upload(ToBf16(in));
    dout.Poison();
    PHI_ASSERT_CUDA_OK(gelu_forward(din.get(), s.in_stride, dout.get(), s.out_stride, s.rows,
                                    s.cols, nullptr));
    PHI_ASSERT_CUDART(cudaDeviceSynchronize());
    std::vector<float> want(static_cast<size_t>(s.rows) * s.out_stride);
    gelu_forward_cpu(in.data(), s.in_stride, want.data(), s.out_stride, s.rows, s.cols);
    const std::vector<float> got = ToF32(dout.Download());
    std::vector<float> g, w;
    for (int r = 0; r < s.rows; ++r) {
      for (int c = 0; c < s.cols; ++c) {
        g.push_back(got[static_cast<size_t>(r) * s.out_stride + c]);
        w.push_back(want[static_cast<size_t>(r) * s.out_stride + c]);
      }
    }
    EXPECT_LT(RelNormError(g, w), kTolBf16);
  }
}

TEST(BiasAddGpu, Bf16AndF32) {
  PHI_REQUIRE_GPU();
  const int rows = 3, cols = 37;
  const std::vector<float> x = RandomBf16Values(rows * cols, 51), b = RandomBf16Values(cols, 52);
  std::vector<float> want(x);
  for (int i = 0; i < rows * cols; ++i) want[i] += b[i % cols];
  DeviceBuffer<float> fx(x.size()), fb(cols);
  fx.Upload(x);
  fb.Upload(b);
  PHI_ASSERT_CUDA_OK(bias_add_forward(fx.get(), fb.get(), rows, cols, nullptr));
  DeviceBuffer<bf16> hx(x.size()), hb(cols);
  hx.Upload(ToBf16(x));
  hb.Upload(ToBf16(b));
  PHI_ASSERT_CUDA_OK(bias_add_forward(hx.get(), hb.get(), rows, cols, nullptr));
  PHI_ASSERT_CUDART(cudaDeviceSynchronize());
  EXPECT_EQ(fx.Download(), want);
  EXPECT_LT(RelNormError(ToF32(hx.Download()), want), kTolBf16);
}

// A random paged cache: every sequence gets its own shuffled blocks.
struct PagedFixture {
  int heads, block_size, max_blocks, num_blocks;
  std::vector<float> k, v;
  std::vector<int32_t> tables;

  PagedFixture(int heads_, int block_size_, const std::vector<int>& lens, uint32_t seed)
      : heads(heads_), block_size(block_size_) {
    max_blocks = 1;
    int total = 0;
    for (int l : lens) {
      max_blocks = std::max(max_blocks, (l + block_size - 1) / block_size);
      total += (l + block_size - 1) / block_size;
    }
    num_blocks = total + 2;
    std::vector<int32_t> ids(num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(lens.size() * max_blocks, -1);
    int next = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      for (int b = 0; b < (lens[s] + block_size - 1) / block_size; ++b) {
        tables[s * max_blocks + b] = ids[next++];
      }
    }
    const size_t n = static_cast<size_t>(num_blocks) * heads * block_size * 64;
    k = RandomBf16Values(n, seed + 1, 1.0f);
    v = RandomBf16Values(n, seed + 2, 1.0f);
  }
};

TEST(AttentionDecodeGpu, MatchesCpuTwinOverPartitionsAndOddLengths) {
  PHI_REQUIRE_GPU();
  struct Case { int heads, block_size; std::vector<int> lens; };
  for (const Case& c : {Case{2, 16, {1}}, Case{32, 16, {17, 256, 257, 1000, 2048}},
                        Case{3, 7, {5, 300, 1}}, Case{1, 16, {513}}}) {
    SCOPED_TRACE("heads=" + std::to_string(c.heads) + " seqs=" + std::to_string(c.lens.size()));
    const int ns = static_cast<int>(c.lens.size()), hd = c.heads * 64;
    PagedFixture f(c.heads, c.block_size, c.lens, 61);
    const int q_stride = 3 * hd, out_stride = hd + 8;
    const std::vector<float> q = RandomBf16Values(static_cast<size_t>(ns) * q_stride, 62, 2.0f);
    DeviceBuffer<bf16> dq(q.size()), dk(f.k.size()), dv(f.v.size()),
        dout(static_cast<size_t>(ns) * out_stride);
    DeviceBuffer<int32_t> dt(f.tables.size()), dl(ns);
    dq.Upload(ToBf16(q));
    dk.Upload(ToBf16(f.k));
    dv.Upload(ToBf16(f.v));
    dt.Upload(f.tables);
    dl.Upload(std::vector<int32_t>(c.lens.begin(), c.lens.end()));
    const int max_len = *std::max_element(c.lens.begin(), c.lens.end());
    DeviceBuffer<float> ws(std::max<int64_t>(1, attention_decode_workspace_floats(ns, c.heads, max_len)));
    DeviceBuffer<unsigned int> counters(static_cast<size_t>(ns) * c.heads);
    cudaMemset(counters.get(), 0, counters.size() * sizeof(unsigned int));
    dout.Poison();
    PagedAttentionArgs a;
    a.q = dq.get();
    a.q_stride = q_stride;
    a.k_cache = dk.get();
    a.v_cache = dv.get();
    a.block_tables = dt.get();
    a.max_blocks_per_seq = f.max_blocks;
    a.out = dout.get();
    a.out_stride = out_stride;
    a.num_seqs = ns;
    a.num_heads = c.heads;
    a.head_dim = 64;
    a.block_size = c.block_size;
    a.scale = 0.125f;
    // Twice: the first call must leave the merge counters at zero for the second.
    PHI_ASSERT_CUDA_OK(attention_decode(a, dl.get(), max_len, ws.get(), counters.get(), nullptr));
    dout.Poison();
    PHI_ASSERT_CUDA_OK(attention_decode(a, dl.get(), max_len, ws.get(), counters.get(), nullptr));
    PHI_ASSERT_CUDART(cudaDeviceSynchronize());
    for (unsigned int c : counters.Download()) ASSERT_EQ(c, 0u);
    std::vector<float> want(static_cast<size_t>(ns) * out_stride, 0.0f);
    std::vector<int32_t> lens(c.lens.begin(), c.lens.end());
    attention_decode_cpu(q.data(), q_stride, f.k.data(), f.v.data(), f.tables.data(),
                         f.max_blocks, lens.data(), want.data(), out_stride, ns, c.heads, 64,
                         c.block_size, 0.125f);
    const std::vector<float> got = ToF32(dout.Download());
    std::vector<float> g, w;
    for (int s = 0; s < ns; ++s) {
      for (int d = 0; d < hd; ++d) {
        g.push_back(got[static_cast<size_t>(s) * out_stride + d]);
        w.push_back(want[static_cast<size_t>(s) * out_stride + d]);
      }
    }
    EXPECT_LT(RelNormError(g, w), kTolBf16);
  }
}

TEST(AttentionPrefillGpu, MatchesCpuTwinForChunks) {
  PHI_REQUIRE_GPU();
  // (start_pos, num_new) per sequence: a single token, a fresh prompt over one tile, a chunk
  // continuing a cached prefix, lengths off the block and tile sizes.
  const std::vector<std::pair<int, int>> seqs = {{0, 1}, {0, 70}, {13, 5}, {100, 130}, {0, 64},
                                                 {37, 1}};
  const int heads = 3, block_size = 16, hd = heads * 64;
  std::vector<int> lens;
  for (auto [st, n] : seqs) lens.push_back(st + n);
  PagedFixture f(heads, block_size, lens, 71);
  const int ns = static_cast<int>(seqs.size());
  std::vector<int32_t> q_off, start, num_new;
  int rows = 0;
  for (auto [st, n] : seqs) {
    q_off.push_back(rows);
    start.push_back(st);
    num_new.push_back(n);
    rows += n;
  }
  std::vector<int32_t> tile_seq, tile_first;
  prefill_tiles_cpu(num_new.data(), ns, &tile_seq, &tile_first);
  const int q_stride = 3 * hd + 8, out_stride = hd + 2;
  const std::vector<float> q = RandomBf16Values(static_cast<size_t>(rows) * q_stride, 72, 2.0f);
  DeviceBuffer<bf16> dq(q.size()), dk(f.k.size()), dv(f.v.size()),
      dout(static_cast<size_t>(rows) * out_stride);
  DeviceBuffer<int32_t> dt(f.tables.size()), dqo(ns), dst(ns), dnn(ns), dts(tile_seq.size()),
      dtf(tile_first.size());
  dq.Upload(ToBf16(q));
  dk.Upload(ToBf16(f.k));
  dv.Upload(ToBf16(f.v));
  dt.Upload(f.tables);
  dqo.Upload(q_off);
  dst.Upload(start);
  dnn.Upload(num_new);
  dts.Upload(tile_seq);
  dtf.Upload(tile_first);
  dout.Poison();
  PagedAttentionArgs a;
  a.q = dq.get();
  a.q_stride = q_stride;
  a.k_cache = dk.get();
  a.v_cache = dv.get();
  a.block_tables = dt.get();
  a.max_blocks_per_seq = f.max_blocks;
  a.out = dout.get();
  a.out_stride = out_stride;
  a.num_seqs = ns;
  a.num_heads = heads;
  a.head_dim = 64;
  a.block_size = block_size;
  a.scale = 0.125f;
  PrefillTiles t;
  t.q_offset = dqo.get();
  t.start_pos = dst.get();
  t.num_new = dnn.get();
  t.tile_seq = dts.get();
  t.tile_first = dtf.get();
  t.num_tiles = static_cast<int>(tile_seq.size());
  std::vector<float> want(static_cast<size_t>(rows) * out_stride, 0.0f);
  attention_prefill_cpu(q.data(), q_stride, f.k.data(), f.v.data(), f.tables.data(),
                        f.max_blocks, q_off.data(), start.data(), num_new.data(), want.data(),
                        out_stride, ns, heads, 64, block_size, 0.125f);
  for (bool tensor_cores : {true, false}) {
    SCOPED_TRACE(tensor_cores ? "mma.sync kernel" : "FP32 FMA kernel");
    a.tensor_cores = tensor_cores;
    dout.Poison();
    PHI_ASSERT_CUDA_OK(attention_prefill(a, t, nullptr));
    PHI_ASSERT_CUDART(cudaDeviceSynchronize());
    const std::vector<float> got = ToF32(dout.Download());
    std::vector<float> g, w;
    double worst = 0;
    for (int r = 0; r < rows; ++r) {
      for (int d = 0; d < hd; ++d) {
        g.push_back(got[static_cast<size_t>(r) * out_stride + d]);
        w.push_back(want[static_cast<size_t>(r) * out_stride + d]);
        worst = std::max(worst, static_cast<double>(std::abs(g.back() - w.back())));
      }
    }
    const double err = RelNormError(g, w);
    std::printf("attention_prefill (%s): rel norm error %.2e, worst element %.2e\n",
                tensor_cores ? "tensor cores" : "FMA", err, worst);
    EXPECT_LT(err, kTolBf16);
    // Every output row was written (the poison is NaN).
    for (float x : g) ASSERT_TRUE(std::isfinite(x));
  }
}

std::vector<SamplingParams> SamplingCases() {
  std::vector<SamplingParams> ps;
  auto add = [&](float t, int k, float p, float mp, uint64_t seed, int top_n) {
    SamplingParams s;
    s.temperature = t;
    s.top_k = k;
    s.top_p = p;
    s.min_p = mp;
    s.seed = seed;
    s.step = seed * 7 + 3;
    s.num_top_logprobs = top_n;
    ps.push_back(s);
  };
  add(0.0f, 0, 1.0f, 0.0f, 1, 5);   // greedy with top-5 logprobs
  add(1.0f, 1, 1.0f, 0.0f, 2, 0);   // top-k 1 == greedy
  add(0.8f, 5, 1.0f, 0.0f, 3, 0);
  add(1.0f, 50, 1.0f, 0.0f, 4, 2);
  add(0.7f, 0, 0.9f, 0.0f, 5, 0);
  add(1.0f, 0, 1.0f, 0.1f, 6, 0);
  add(1.2f, 40, 0.8f, 0.05f, 7, 20);
  add(0.9f, 0, 1.0f, 0.0f, 8, 0);   // plain temperature over the whole vocabulary
  add(0.5f, 3, 0.5f, 0.0f, 9, 1);
  return ps;
}

// Peaked random logits (a few large values) so draws over the full vocabulary do not land on
// float-rounding boundaries between the two implementations.
std::vector<float> SamplingLogits(int rows, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::vector<float> l(static_cast<size_t>(rows) * vocab);
  for (float& x : l) x = n(rng);
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < 30; ++j) l[static_cast<size_t>(r) * vocab + rng() % vocab] += 20.0f;
  }
  return l;
}

TEST(SampleGpu, MatchesCpuTwin) {
  PHI_REQUIRE_GPU();
  const int vocab = 51200, limit = 50295, top_n = 20;
  std::vector<SamplingParams> ps = SamplingCases();
  // More draws of the same settings with other seeds.
  const size_t base = ps.size();
  for (size_t i = 0; i < 3 * base; ++i) {
    SamplingParams p = ps[i % base];
    p.seed = 1000 + i;
    p.step = i;
    ps.push_back(p);
  }
  const int rows = static_cast<int>(ps.size());
  std::vector<float> logits = SamplingLogits(rows, vocab, 81);
  logits[static_cast<size_t>(0) * vocab + 50300] = 1e4f;  // past the limit: never chosen
  DeviceBuffer<float> dl(logits.size()), dlp(rows), dtl(static_cast<size_t>(rows) * top_n);
  DeviceBuffer<int32_t> dtok(rows), dti(static_cast<size_t>(rows) * top_n);
  DeviceBuffer<SamplingParams> dp(rows);
  dl.Upload(logits);
  dp.Upload(ps);
  dtok.Poison();
  SampleArgs a;
  a.logits = dl.get();
  a.rows = rows;
  a.vocab = vocab;
  a.vocab_limit = limit;
  a.params = dp.get();
  a.out_token = dtok.get();
  a.out_logprob = dlp.get();
  a.out_top_ids = dti.get();
  a.out_top_logprobs = dtl.get();
  a.max_top_n = top_n;
  PHI_ASSERT_CUDA_OK(sample_forward(a, nullptr));
  PHI_ASSERT_CUDART(cudaDeviceSynchronize());
  std::vector<int32_t> tok(rows), tid(static_cast<size_t>(rows) * top_n);
  std::vector<float> lp(rows), tlp(static_cast<size_t>(rows) * top_n);
  sample_forward_cpu(logits.data(), rows, vocab, limit, ps.data(), tok.data(), lp.data(),
                     tid.data(), tlp.data(), top_n);
  const std::vector<int32_t> gtok = dtok.Download(), gtid = dti.Download();
  const std::vector<float> glp = dlp.Download(), gtlp = dtl.Download();
  for (int r = 0; r < rows; ++r) {
    SCOPED_TRACE("row " + std::to_string(r));
    EXPECT_EQ(gtok[r], tok[r]);
    EXPECT_LT(gtok[r], limit);
    EXPECT_NEAR(glp[r], lp[r], 1e-3);
    for (int j = 0; j < top_n; ++j) {
      const size_t o = static_cast<size_t>(r) * top_n + j;
      EXPECT_EQ(gtid[o], tid[o]) << "top " << j;
      if (tid[o] >= 0) {
        EXPECT_NEAR(gtlp[o], tlp[o], 1e-3);
      }
    }
  }
}

TEST(SampleGpu, DrawDoesNotDependOnTheBatch) {
  PHI_REQUIRE_GPU();
  const int vocab = 4099;
  std::vector<SamplingParams> ps = SamplingCases();
  const int rows = static_cast<int>(ps.size());
  const std::vector<float> logits = SamplingLogits(rows, vocab, 91);
  DeviceBuffer<float> dl(logits.size()), dlp(rows);
  DeviceBuffer<int32_t> dtok(rows);
  DeviceBuffer<SamplingParams> dp(rows);
  dl.Upload(logits);
  dp.Upload(ps);
  SampleArgs a;
  a.logits = dl.get();
  a.rows = rows;
  a.vocab = vocab;
  a.vocab_limit = vocab;
  a.params = dp.get();
  a.out_token = dtok.get();
  a.out_logprob = dlp.get();
  PHI_ASSERT_CUDA_OK(sample_forward(a, nullptr));
  PHI_ASSERT_CUDART(cudaDeviceSynchronize());
  const std::vector<int32_t> batched = dtok.Download();
  for (int r = 0; r < rows; ++r) {
    SampleArgs one = a;
    one.logits = dl.get() + static_cast<size_t>(r) * vocab;
    one.params = dp.get() + r;
    one.rows = 1;
    PHI_ASSERT_CUDA_OK(sample_forward(one, nullptr));
    PHI_ASSERT_CUDART(cudaDeviceSynchronize());
    EXPECT_EQ(dtok.Download()[0], batched[r]) << "row " << r;
  }
}

TEST(GemmLtGpu, BiasEpilogueBf16AndResidualF32) {
  PHI_REQUIRE_GPU();
  std::unique_ptr<GemmLt> gemm;
  PHI_ASSERT_CUDA_OK(GemmLt::Create(32u << 20, &gemm));
  // gemv_forward (small-M limit 8) and cuBLASLt (limit 0).
  for (auto [m, small] : std::vector<std::pair<int, bool>>{{1, true}, {2, true}, {3, true},
                                                          {8, true}, {1, false}, {7, false},
                                                          {64, true}, {129, true}}) {
    SCOPED_TRACE("m=" + std::to_string(m) + (small ? " gemv" : " cublasLt"));
    gemm->set_small_m_max(small ? kGemvMaxM : 0);
    const int n = 384, k = 264;
    const std::vector<float> a = RandomBf16Values(static_cast<size_t>(m) * k, 101);
    const std::vector<float> w = RandomBf16Values(static_cast<size_t>(n) * k, 102, 0.1f);
    const std::vector<float> b = RandomBf16Values(n, 103);
    std::vector<float> resid = RandomBf16Values(static_cast<size_t>(m) * n, 104);
    DeviceBuffer<bf16> da(a.size()), dw(w.size()), db(n), dd(static_cast<size_t>(m) * n);
    DeviceBuffer<float> dbf(n), dres(resid.size());
    da.Upload(ToBf16(a));
    dw.Upload(ToBf16(w));
    db.Upload(ToBf16(b));
    dbf.Upload(b);
    dres.Upload(resid);
    dd.Poison();
    PHI_ASSERT_CUDA_OK(gemm->Matmul(da.get(), dw.get(), db.get(), dd.get(), false, 0.0f, m, n, k,
                                    nullptr));
    PHI_ASSERT_CUDA_OK(gemm->Matmul(da.get(), dw.get(), dbf.get(), dres.get(), true, 1.0f, m, n,
                                    k, nullptr));
    PHI_ASSERT_CUDART(cudaDeviceSynchronize());
    std::vector<float> want(static_cast<size_t>(m) * n, 0.0f);
    gemm_bias_cpu(a.data(), w.data(), b.data(), want.data(), 0.0f, m, n, k);
    EXPECT_LT(RelNormError(ToF32(dd.Download()), want), kTolBf16);
    gemm_bias_cpu(a.data(), w.data(), b.data(), resid.data(), 1.0f, m, n, k);
    EXPECT_LT(RelNormError(dres.Download(), resid), kTolF32);
  }
}

}  // namespace
}  // namespace phi::worker::cuda
