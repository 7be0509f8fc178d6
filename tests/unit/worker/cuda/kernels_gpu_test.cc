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
#include "tests/unit/worker/cuda/paged_attention_checks.h"

namespace phi::worker::cuda {
namespace {

using testing::DecodeCase;
using testing::DeviceBuffer;
using testing::ExpectDecodeAttentionMatchesTwin;
using testing::ExpectPrefillAttentionMatchesTwin;
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

TEST(AttentionDecodeGpu, MatchesCpuTwinOverPartitionsAndOddLengths) {
  PHI_REQUIRE_GPU();
  for (const DecodeCase& c : {DecodeCase{2, 16, {1}}, DecodeCase{32, 16, {17, 256, 257, 1000, 2048}},
                              DecodeCase{3, 7, {5, 300, 1}}, DecodeCase{1, 16, {513}},
                              DecodeCase{4, 16, {1, 640, 129, 128}, 2048}}) {
    ExpectDecodeAttentionMatchesTwin(c, KvCacheDtype::kBf16);
  }
}

TEST(AttentionPrefillGpu, MatchesCpuTwinForChunks) {
  PHI_REQUIRE_GPU();
  ExpectPrefillAttentionMatchesTwin(KvCacheDtype::kBf16, 1.0f, 1.0f);
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
