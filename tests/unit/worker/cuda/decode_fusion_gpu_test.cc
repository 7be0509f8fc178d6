// The fused one-token decode GEMV (decode_gemv_forward) against the CPU twins, its fused forms
// against the unfused kernels bit for bit, a chain of programmatic dependent launches inside
// a CUDA graph against the same chain launched plainly, and the model's fused batch-1 decode
// against its unfused decode. Label: gpu (skips without a GPU).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/cuda/model_test_util.h"

namespace phi::worker::cuda {
namespace {

using testing::DeviceBuffer;
using testing::FillRandomWeights;
using testing::RandomBf16Values;
using testing::ToBf16;
using testing::ToF32;

struct Shape {
  int n, k;
};
// One row, rows not a multiple of any row group, K not a multiple of a warp's round of loads,
// a K too short for every lane to load, and the two Phi-1.5 decode shapes of a layer.
const Shape kShapes[] = {{1, 64}, {37, 136}, {300, 2048}, {1023, 1000}, {5, 8},
                         {2048, 10240}, {14336, 2048}};

// The activation rows each prologue builds, from the CPU twins, rounded to BF16 as stored.
std::vector<float> LayerNormRows(const std::vector<float>& x, const std::vector<int32_t>& rows,
                                 const std::vector<float>& g, const std::vector<float>& b, int m,
                                 int k) {
  std::vector<float> a(static_cast<size_t>(m) * k);
  layernorm_forward_cpu(x.data(), rows.data(), g.data(), b.data(), a.data(), m, k, 1e-5f);
  for (float& v : a) v = bf16_round_cpu(v);
  return a;
}
std::vector<float> GeluConcatRows(const std::vector<float>& a, int a_cols,
                                  const std::vector<float>& f, int f_cols, int f_stride, int m,
                                  int k) {
  std::vector<float> rows(static_cast<size_t>(m) * k, 0.0f);
  for (int i = 0; i < m; ++i) {
    for (int c = 0; c < a_cols; ++c) rows[size_t(i) * k + c] = a[size_t(i) * k + c];
    for (int j = 0; j < f_cols; ++j) {
      rows[size_t(i) * k + a_cols + j] = bf16_round_cpu(gelu_new_scalar_cpu(f[size_t(i) * f_stride + j]));
    }
  }
  return rows;
}

// Everything one decode GEMV launch needs, on the device, for one shape and m tokens. With m > 1
// the LayerNorm reads x's rows in reverse (row_index) and f's rows are strided.
struct Problem {
  Problem(Shape s, uint32_t seed, int tokens = 1)
      : m(tokens),
        n(s.n),
        k(s.k),
        a_cols(s.k / 3 / 8 * 8),
        f_cols(s.k - a_cols - (s.k > 16 ? 5 : 0)),
        f_stride(tokens > 1 ? s.k + 8 : s.k),
        w_h(RandomBf16Values(static_cast<size_t>(s.n) * s.k, seed, 0.05f)),
        bias_h(RandomBf16Values(s.n, seed + 1, 0.5f)),
        x_h(RandomBf16Values(size_t(m) * s.k, seed + 2, 2.0f)),
        g_h(RandomBf16Values(s.k, seed + 3, 1.0f)),
        b_h(RandomBf16Values(s.k, seed + 4, 0.5f)),
        a_h(RandomBf16Values(size_t(m) * s.k, seed + 5, 1.0f)),
        f_h(RandomBf16Values(size_t(m) * f_stride, seed + 6, 3.0f)),
        d0_h(RandomBf16Values(size_t(m) * s.n, seed + 7, 1.0f)),
        rows_h(m),
        w(w_h.size()), bias_bf(s.n), bias_f(s.n), x(x_h.size()), g(s.k), b(s.k), a(a_h.size()),
        f(f_h.size()), d_bf(d0_h.size()), d_f(d0_h.size()), rows(m) {
    for (float& v : x_h) v += 0.3f;  // a mean away from zero
    for (int i = 0; i < m; ++i) rows_h[i] = m - 1 - i;
    w.Upload(ToBf16(w_h));
    bias_bf.Upload(ToBf16(bias_h));
    bias_f.Upload(bias_h);
    x.Upload(x_h);
    g.Upload(ToBf16(g_h));
    b.Upload(ToBf16(b_h));
    a.Upload(ToBf16(a_h));
    f.Upload(ToBf16(f_h));
    rows.Upload(rows_h);
  }
  DecodeGemvArgs Args(GemvPrologue p, bool d_f32, float beta, bool with_bias) const {
    DecodeGemvArgs r;
    r.prologue = p;
    r.m = m;
    r.a = a.get();
    r.a_cols = a_cols;
    r.f = f.get();
    r.f_cols = f_cols;
    r.f_stride = m > 1 ? f_stride : 0;
    r.x = x.get();
    r.row_index = m > 1 ? rows.get() : nullptr;
    r.gamma = g.get();
    r.beta_ln = b.get();
    r.eps = 1e-5f;
    r.w = w.get();
    r.bias = with_bias ? (d_f32 ? static_cast<const void*>(bias_f.get()) : bias_bf.get()) : nullptr;
    r.d = d_f32 ? static_cast<void*>(d_f.get()) : d_bf.get();
    r.d_f32 = d_f32;
    r.beta = beta;
    r.n = n;
    r.k = k;
    r.first_col = p == GemvPrologue::kGeluConcat ? a_cols : 0;
    return r;
  }
  // A's m rows as the prologue builds them.
  std::vector<float> Rows(GemvPrologue p) const {
    switch (p) {
      case GemvPrologue::kLayerNorm: return LayerNormRows(x_h, rows_h, g_h, b_h, m, k);
      case GemvPrologue::kGeluConcat: return GeluConcatRows(a_h, a_cols, f_h, f_cols, f_stride, m, k);
      default: return a_h;
    }
  }
  void ResetOutputs() {
    d_bf.Upload(ToBf16(d0_h));
    d_f.Upload(d0_h);
  }
  std::vector<float> Output(bool d_f32) const { return d_f32 ? d_f.Download() : ToF32(d_bf.Download()); }

  int m, n, k, a_cols, f_cols, f_stride;
  std::vector<float> w_h, bias_h, x_h, g_h, b_h, a_h, f_h, d0_h;
  std::vector<int32_t> rows_h;
  DeviceBuffer<bf16> w, bias_bf;
  DeviceBuffer<float> bias_f, x;
  DeviceBuffer<bf16> g, b, a, f, d_bf;
  DeviceBuffer<float> d_f;
  DeviceBuffer<int32_t> rows;
};

const char* Name(GemvPrologue p) {
  return p == GemvPrologue::kLayerNorm ? "layernorm" : p == GemvPrologue::kGeluConcat ? "gelu" : "plain";
}

// Every prologue x split x grid x output type against the twins for m tokens (the Phi-1.5
// shapes once, with the default split and grid: the host reference is slow).
void ExpectGemvMatchesTwin(int m, uint32_t seed) {
  for (const Shape& s : kShapes) {
    const bool big = static_cast<int64_t>(s.n) * s.k > (1 << 22);
    Problem pr(s, seed += 10, m);
    for (GemvPrologue p : {GemvPrologue::kPlain, GemvPrologue::kLayerNorm, GemvPrologue::kGeluConcat}) {
      if (p == GemvPrologue::kLayerNorm && !decode_gemv_layernorm_fits(s.k)) continue;
      const std::vector<float> row = pr.Rows(p);
      for (int split : big ? std::vector<int>{0} : std::vector<int>{0, 1, 2, 4, 8}) {
        for (int per_sm : big ? std::vector<int>{0} : std::vector<int>{0, 1}) {
          for (bool d_f32 : {false, true}) {
            const float beta = d_f32 ? 1.0f : 0.0f;  // the residual add is F32, as in the model
            const bool with_bias = split != 2;
            SCOPED_TRACE(std::string(Name(p)) + " m=" + std::to_string(m) + " n=" +
                         std::to_string(s.n) + " k=" + std::to_string(s.k) + " split=" +
                         std::to_string(split) + " per_sm=" + std::to_string(per_sm) +
                         (d_f32 ? " f32" : " bf16"));
            pr.ResetOutputs();
            DecodeGemvArgs args = pr.Args(p, d_f32, beta, with_bias);
            args.split = split;
            args.blocks_per_sm = per_sm;
            args.pdl = split == 4;  // eager launches with the attribute, too
            if (p == GemvPrologue::kPlain && split == 1) args.first_col = pr.a_cols;
            PHI_ASSERT_CUDA_OK(decode_gemv_forward(args, nullptr));
            PHI_ASSERT_CUDART(cudaDeviceSynchronize());
            const std::vector<float> got = pr.Output(d_f32);
            std::vector<float> want = pr.d0_h;
            gemm_bias_cpu(row.data(), pr.w_h.data(), with_bias ? pr.bias_h.data() : nullptr,
                          want.data(), beta, m, s.n, s.k);
            int bad = 0;
            for (int i = 0; i < m; ++i) {
              for (int r = 0; r < s.n; ++r) {
                const size_t o = size_t(i) * s.n + r;
                double mag = std::abs(beta * pr.d0_h[o]) + (with_bias ? std::abs(pr.bias_h[r]) : 0.0);
                for (int c = 0; c < s.k; ++c) {
                  mag += std::abs(pr.w_h[size_t(r) * s.k + c] * row[size_t(i) * s.k + c]);
                }
                // F32 sums in another order; a BF16 output adds one rounding; the LayerNorm
                // row may differ from the twin's by one BF16 step in a few elements.
                const double tol = 1e-5 * mag + (d_f32 ? 0.0 : 8e-3 * std::abs(want[o])) +
                                   (p == GemvPrologue::kLayerNorm ? 8e-3 * mag : 0.0) + 1e-6;
                if (!(std::abs(got[o] - want[o]) <= tol) && bad++ < 3) {
                  ADD_FAILURE() << "token " << i << " row " << r << ": got " << got[o]
                                << " want " << want[o] << " tol " << tol;
                }
              }
            }
            EXPECT_EQ(bad, 0);
          }
        }
      }
    }
  }
}

TEST(DecodeGemvGpu, MatchesCpuTwinForEveryPrologueSplitAndGrid) {
  PHI_REQUIRE_GPU();
  ExpectGemvMatchesTwin(1, 100);
}

// The tensor-core form: 3 (tokens past m are zeros in the mma) and 8 tokens.
TEST(GemvTilesGpu, MatchesCpuTwinForEveryPrologueSplitAndTokenCount) {
  PHI_REQUIRE_GPU();
  for (int m : {3, 8}) ExpectGemvMatchesTwin(m, 300 + m);
}

// Arguments out of range are refused before any launch, with the field and its range.
TEST(GemvTilesGpu, RefusesBadArgumentsWithTheirRanges) {
  PHI_REQUIRE_GPU();
  Problem pr({64, 64}, 900, 2);
  auto message = [&](auto change) {
    DecodeGemvArgs a = pr.Args(GemvPrologue::kPlain, false, 0.0f, true);
    change(a);
    const CudaStatus st = decode_gemv_forward(a, nullptr);
    return st.ok() ? std::string("ok") : st.message();
  };
  EXPECT_NE(message([](DecodeGemvArgs& a) { a.m = 9; }).find("m must be in [1, 8], got 9"),
            std::string::npos);
  EXPECT_NE(message([](DecodeGemvArgs& a) { a.m = 0; }).find("m must be in [1, 8], got 0"),
            std::string::npos);
  EXPECT_NE(message([](DecodeGemvArgs& a) { a.k = 60; }).find("k a positive multiple of 8"),
            std::string::npos);
  EXPECT_NE(message([](DecodeGemvArgs& a) { a.split = 3; }).find("split must be 0 (default), 1, 2, 4 or 8"),
            std::string::npos);
  // Eight rows of k = 16384 need 262,656 bytes of shared memory, more than a block may have.
  EXPECT_FALSE(decode_gemv_fits(8, 16384));
  EXPECT_TRUE(decode_gemv_fits(8, 10240));  // Phi-1.5's W2
  EXPECT_TRUE(decode_gemv_fits(1, 16384));
  EXPECT_NE(message([](DecodeGemvArgs& a) { a.m = 8; a.k = 16384; }).find("do not fit in shared memory"),
            std::string::npos);
  EXPECT_NE(message([&](DecodeGemvArgs& a) {
              a.prologue = GemvPrologue::kGeluConcat;
              a.first_col = a.a_cols;
              a.f_stride = a.f_cols - 1;
            }).find("f_stride 0 or >= f_cols"),
            std::string::npos);
  EXPECT_EQ(message([](DecodeGemvArgs&) {}), "ok");
  cudaDeviceSynchronize();
}

// The fused forms equal the unfused kernels (layernorm_forward / gelu_forward into memory,
// then the kPlain GEMV) byte for byte, for m tokens: the model's fused and unfused decode
// agree exactly.
void ExpectFusedProloguesEqualUnfused(int m, uint32_t seed) {
  for (const Shape& s : kShapes) {
    Problem pr(s, seed += 10, m);
    DeviceBuffer<bf16> row(size_t(m) * s.k);
    // Several tokens on the Phi-1.5 shapes: the default split only (the emulator is slow).
    const bool big = m > 1 && static_cast<int64_t>(s.n) * s.k > (1 << 22);
    for (int split : big ? std::vector<int>{0} : std::vector<int>{0, 1, 2, 4, 8}) {
      for (bool d_f32 : {false, true}) {
        SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(s.n) + " k=" +
                     std::to_string(s.k) + " split=" + std::to_string(split) +
                     (d_f32 ? " f32" : " bf16"));
        auto run = [&](DecodeGemvArgs args) {
          args.split = split;
          pr.ResetOutputs();
          const CudaStatus st = decode_gemv_forward(args, nullptr);
          EXPECT_TRUE(st.ok()) << st.message();
          cudaDeviceSynchronize();
          return pr.Output(d_f32);
        };
        if (decode_gemv_layernorm_fits(s.k)) {
          const std::vector<float> fused = run(pr.Args(GemvPrologue::kLayerNorm, d_f32, 1.0f, true));
          PHI_ASSERT_CUDA_OK(layernorm_forward(pr.x.get(), m > 1 ? pr.rows.get() : nullptr,
                                               pr.g.get(), pr.b.get(), row.get(), m, s.k, 1e-5f,
                                               nullptr));
          DecodeGemvArgs plain = pr.Args(GemvPrologue::kPlain, d_f32, 1.0f, true);
          plain.a = row.get();
          const std::vector<float> unfused = run(plain);
          EXPECT_EQ(0, std::memcmp(fused.data(), unfused.data(), 4 * fused.size())) << "layernorm";
        }
        {
          const std::vector<float> fused = run(pr.Args(GemvPrologue::kGeluConcat, d_f32, 1.0f, true));
          PHI_ASSERT_CUDART(cudaMemset(row.get(), 0, 2 * size_t(m) * s.k));
          PHI_ASSERT_CUDART(cudaMemcpy2D(row.get(), 2 * s.k, pr.a.get(), 2 * s.k, 2 * pr.a_cols, m,
                                         cudaMemcpyDeviceToDevice));
          if (pr.f_cols > 0) {
            PHI_ASSERT_CUDA_OK(gelu_forward(pr.f.get(), pr.f_stride, row.get() + pr.a_cols, s.k,
                                            m, pr.f_cols, nullptr));
          }
          DecodeGemvArgs plain = pr.Args(GemvPrologue::kPlain, d_f32, 1.0f, true);
          plain.a = row.get();
          plain.first_col = pr.a_cols;  // kGeluConcat sums the gelu columns first
          const std::vector<float> unfused = run(plain);
          EXPECT_EQ(0, std::memcmp(fused.data(), unfused.data(), 4 * fused.size())) << "gelu";
        }
      }
    }
  }
}

TEST(DecodeGemvGpu, FusedProloguesEqualTheUnfusedKernelsBitForBit) {
  PHI_REQUIRE_GPU();
  ExpectFusedProloguesEqualUnfused(1, 500);
}

TEST(GemvTilesGpu, FusedProloguesEqualTheUnfusedKernelsBitForBit) {
  PHI_REQUIRE_GPU();
  for (int m : {2, 8}) ExpectFusedProloguesEqualUnfused(m, 700 + m);
}

// A chain shaped like a decode layer, each launch a programmatic dependent of the one before:
// y = LayerNorm(x) W1 (as the qkv|fc1 GEMV); t = y[0, 64) Wt (one kernel in between, like
// rotary and attention); x += [t | gelu(y[64, 64 + inner))] W2 (the gelu columns, from two
// launches back, read before the wait). Captured in a graph and replayed, and launched
// eagerly: equal to the same chain launched plainly. A kernel that read its predecessor's
// output before pdl_wait() would see the previous layer's or replay's values and differ.
TEST(DecodeGemvGpu, ProgrammaticLaunchChainInAGraphEqualsPlainLaunches) {
  PHI_REQUIRE_GPU();
  const int h = 256, inner = 1024, head = 64, layers = 12;
  const std::vector<float> w1_h = RandomBf16Values(size_t(head + inner) * h, 7, 0.06f);
  const std::vector<float> wt_h = RandomBf16Values(size_t(head) * head, 11, 0.1f);
  const std::vector<float> w2_h = RandomBf16Values(size_t(h) * (head + inner), 8, 0.03f);
  const std::vector<float> gb_h = RandomBf16Values(2 * h, 9, 0.2f);
  std::vector<float> x0 = RandomBf16Values(h, 10, 1.0f);
  DeviceBuffer<bf16> w1(w1_h.size()), wt(wt_h.size()), w2(w2_h.size()), gamma(h), beta(h),
      y(head + inner), t(head);
  DeviceBuffer<float> x(h);
  w1.Upload(ToBf16(w1_h));
  wt.Upload(ToBf16(wt_h));
  w2.Upload(ToBf16(w2_h));
  std::vector<float> ones(h, 1.0f), bh(gb_h.begin(), gb_h.begin() + h);
  for (int i = 0; i < h; ++i) ones[i] += gb_h[h + i];
  gamma.Upload(ToBf16(ones));
  beta.Upload(ToBf16(bh));
  auto chain = [&](bool pdl, cudaStream_t s) -> CudaStatus {
    for (int l = 0; l < layers; ++l) {
      DecodeGemvArgs a;
      a.prologue = GemvPrologue::kLayerNorm;
      a.x = x.get();
      a.gamma = gamma.get();
      a.beta_ln = beta.get();
      a.w = w1.get();
      a.d = y.get();
      a.n = head + inner;
      a.k = h;
      a.pdl = pdl;
      PHI_CUDA_RETURN_IF_ERROR(decode_gemv_forward(a, s));
      DecodeGemvArgs m;
      m.a = y.get();
      m.w = wt.get();
      m.d = t.get();
      m.n = head;
      m.k = head;
      m.pdl = pdl;
      PHI_CUDA_RETURN_IF_ERROR(decode_gemv_forward(m, s));
      DecodeGemvArgs b;
      b.prologue = GemvPrologue::kGeluConcat;
      b.a = t.get();
      b.a_cols = head;
      b.f = y.get() + head;
      b.f_cols = inner;
      b.first_col = head;
      b.w = w2.get();
      b.d = x.get();
      b.d_f32 = true;
      b.beta = 1.0f;
      b.n = h;
      b.k = head + inner;
      b.pdl = pdl;
      PHI_CUDA_RETURN_IF_ERROR(decode_gemv_forward(b, s));
    }
    return {};
  };
  cudaStream_t s;
  PHI_ASSERT_CUDART(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  x.Upload(x0);
  PHI_ASSERT_CUDA_OK(chain(false, s));
  PHI_ASSERT_CUDART(cudaStreamSynchronize(s));
  const std::vector<float> want = x.Download();

  cudaGraph_t g;
  PHI_ASSERT_CUDART(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const CudaStatus captured = chain(true, s);
  PHI_ASSERT_CUDART(cudaStreamEndCapture(s, &g));
  PHI_ASSERT_CUDA_OK(captured);
  cudaGraphExec_t exec;
  PHI_ASSERT_CUDART(cudaGraphInstantiate(&exec, g, 0));
  for (int rep = 0; rep < 20; ++rep) {
    PHI_ASSERT_CUDART(cudaMemcpyAsync(x.get(), x0.data(), 4 * h, cudaMemcpyHostToDevice, s));
    PHI_ASSERT_CUDART(cudaGraphLaunch(exec, s));
    PHI_ASSERT_CUDART(cudaStreamSynchronize(s));
    const std::vector<float> got = x.Download();
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), 4 * h)) << "replay " << rep;
  }
  // Eager programmatic launches, too.
  x.Upload(x0);
  PHI_ASSERT_CUDA_OK(chain(true, s));
  PHI_ASSERT_CUDART(cudaStreamSynchronize(s));
  const std::vector<float> eager = x.Download();
  EXPECT_EQ(0, std::memcmp(eager.data(), want.data(), 4 * h));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
}

PhiCudaConfig FusionConfig() {
  PhiCudaConfig c;
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 700;  // w2_cols 956 + padding to 960: the gelu prologue's zero tail
  c.num_layers = 3;
  c.num_heads = 4;
  c.head_dim = 64;
  c.rotary_dim = 32;
  c.max_positions = 512;
  return c;
}

struct Variant {
  bool fuse, pdl, graphs;
  int decode_partitions;  // PhiCudaOptions::decode_partitions (blocks per sequence and head)
  int gemv_max_m = 1;     // PhiCudaOptions::gemv_max_m (8: unfused GEMMs of <= 8 rows as gemv)
};

std::unique_ptr<PhiCudaModel> FusionModel(const Variant& v, KvCacheDtype kv) {
  PhiCudaOptions o;
  o.max_tokens_per_step = 256;
  o.max_seqs = 4;
  o.max_logit_rows = 256;
  o.use_cuda_graphs = v.graphs;
  o.fuse_decode = v.fuse;
  o.programmatic_launch = v.pdl;
  o.decode_partitions = v.decode_partitions;
  o.gemv_max_m = v.gemv_max_m;
  o.kv_dtype = kv;
  std::unique_ptr<PhiCudaModel> m;
  if (!PhiCudaModel::Create(FusionConfig(), o, &m).ok()) return nullptr;
  if (!FillRandomWeights(*m, 77, 0.08f).ok()) return nullptr;
  if (!m->AllocateKvCache(40).ok()) return nullptr;
  return m;
}

// One model per variant, the same weights (null where one could not be made).
std::vector<std::unique_ptr<PhiCudaModel>> FusionModels(std::span<const Variant> variants,
                                                        KvCacheDtype kv) {
  std::vector<std::unique_ptr<PhiCudaModel>> models;
  for (const Variant& v : variants) models.push_back(FusionModel(v, kv));
  return models;
}

// Batch-1 decode, fused (rotary inside attention, LayerNorm and gelu inside the GEMVs; with
// and without programmatic launch, eager and in graphs, decode blocks looping over
// partitions) and unfused with programmatic launch equal the plain unfused decode bit for
// bit, for a BF16 and an FP8 cache: a 250-token prompt, then 40 greedy steps at positions
// 250..289, which cross from the second decode partition into the third (the fused rotary's
// KV write is done by the block owning the position).
TEST(PhiCudaModelFusedDecodeGpu, EqualsUnfusedDecodeBitForBit) {
  PHI_REQUIRE_GPU();
  const Variant variants[] = {{false, false, true, 0}, {true, true, true, 0},
                              {true, false, true, 0},  {true, true, false, 0},
                              {false, true, true, 0},  {true, true, true, 2}};
  for (KvCacheDtype kv : {KvCacheDtype::kBf16, KvCacheDtype::kFp8E4m3}) {
    SCOPED_TRACE(kv == KvCacheDtype::kBf16 ? "bf16 cache" : "fp8 cache");
    const std::vector<std::unique_ptr<PhiCudaModel>> models = FusionModels(variants, kv);
    for (const auto& m : models) ASSERT_NE(m, nullptr);
    std::vector<int32_t> tokens(250);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = static_cast<int32_t>((i * 37 + 11) % 1000);
    }
    std::vector<int32_t> blocks(32);
    std::iota(blocks.begin(), blocks.end(), 3);
    const int vocab = 1000;
    int pos = 0, next = 0;
    for (int step = 0; step < 41; ++step) {
      std::vector<std::vector<float>> logits;
      for (auto& m : models) {
        PhiSeqInput s;
        s.tokens = step == 0 ? std::span<const int32_t>(tokens) : std::span<const int32_t>(&next, 1);
        s.start_pos = pos;
        s.block_table = blocks;
        PhiStepOutput out;
        PHI_ASSERT_CUDA_OK(m->Forward({&s, 1}, &out));
        std::vector<float> row(vocab);
        PHI_ASSERT_CUDA_OK(m->CopyLogits(out.first_row[0] + out.num_rows[0] - 1, 1, row.data()));
        logits.push_back(row);
      }
      for (size_t v = 1; v < logits.size(); ++v) {
        ASSERT_EQ(0, std::memcmp(logits[v].data(), logits[0].data(), 4 * vocab))
            << "variant " << v << " differs from the unfused decode at step " << step;
      }
      pos += step == 0 ? static_cast<int>(tokens.size()) : 1;
      next = static_cast<int32_t>(std::max_element(logits[0].begin(), logits[0].end()) -
                                  logits[0].begin());
    }
    std::printf("fused decode (%s cache): programmatic launch %s on this GPU\n",
                kv == KvCacheDtype::kBf16 ? "bf16" : "fp8",
                models[1]->programmatic_launch_active() ? "active" : "FELL BACK to plain launches");
    EXPECT_EQ(models[1]->num_captured_graphs(), 1);
  }
}

// Decode of three sequences (the fused path on tensor cores, 2..8 tokens): fused, eager and
// in a graph (bucket 4, one padding sequence), with and without programmatic launch and with
// decode blocks looping over partitions, equal the unfused eager decode with the same GEMV
// kernels (gemv_max_m = 8) bit for bit, for a BF16 and an FP8 cache. Prompts of 120, 17 and
// 100 tokens, then 12 greedy steps each (the first sequence crosses a decode partition).
TEST(PhiCudaModelFusedDecodeGpu, ThreeSequencesEqualUnfusedDecodeBitForBit) {
  PHI_REQUIRE_GPU();
  // gemv_max_m = 8 everywhere: the prefill's lm_head (3 rows) then takes the same GEMV too.
  const Variant variants[] = {{false, false, false, 0, 8}, {true, true, true, 0, 8},
                              {true, false, false, 0, 8}, {true, true, true, 2, 8}};
  const int lens[3] = {120, 17, 100};  // 237 tokens: one step's capacity is 256
  const int first_block[3] = {0, 17, 20};
  const int vocab = 1000;
  for (KvCacheDtype kv : {KvCacheDtype::kBf16, KvCacheDtype::kFp8E4m3}) {
    SCOPED_TRACE(kv == KvCacheDtype::kBf16 ? "bf16 cache" : "fp8 cache");
    const std::vector<std::unique_ptr<PhiCudaModel>> models = FusionModels(variants, kv);
    for (const auto& m : models) ASSERT_NE(m, nullptr);
    std::vector<int32_t> prompts[3], blocks[3];
    for (int q = 0; q < 3; ++q) {
      for (int i = 0; i < lens[q]; ++i) prompts[q].push_back((i * 37 + 11 * q + 5) % vocab);
      blocks[q].resize(17);
      std::iota(blocks[q].begin(), blocks[q].end(), first_block[q]);
    }
    int pos[3] = {0, 0, 0};
    int32_t next[3] = {0, 0, 0};
    for (int step = 0; step < 13; ++step) {
      std::vector<std::vector<float>> logits;  // per variant: the three last rows
      for (auto& m : models) {
        PhiSeqInput s[3];
        for (int q = 0; q < 3; ++q) {
          s[q].tokens = step == 0 ? std::span<const int32_t>(prompts[q])
                                  : std::span<const int32_t>(&next[q], 1);
          s[q].start_pos = pos[q];
          s[q].block_table = blocks[q];
        }
        PhiStepOutput out;
        PHI_ASSERT_CUDA_OK(m->Forward({s, 3}, &out));
        std::vector<float> rows(3 * vocab);
        for (int q = 0; q < 3; ++q) {
          PHI_ASSERT_CUDA_OK(m->CopyLogits(out.first_row[q] + out.num_rows[q] - 1, 1,
                                           rows.data() + q * vocab));
        }
        logits.push_back(rows);
      }
      for (size_t v = 1; v < logits.size(); ++v) {
        ASSERT_EQ(0, std::memcmp(logits[v].data(), logits[0].data(), 4 * logits[0].size()))
            << "variant " << v << " differs from the unfused decode at step " << step;
      }
      for (int q = 0; q < 3; ++q) {
        pos[q] += step == 0 ? lens[q] : 1;
        const float* row = logits[0].data() + q * vocab;
        next[q] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      }
    }
    EXPECT_EQ(models[1]->num_captured_graphs(), 1);
  }
}

}  // namespace
}  // namespace phi::worker::cuda
