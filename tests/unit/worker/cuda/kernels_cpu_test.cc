// The CPU twins against independent references and known properties. These run in CI (no
// GPU needed): the GPU tests are only as good as the twins they compare with.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "tests/unit/worker/cuda/kernels_cpu.h"

namespace phi::worker::cuda {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(LayerNormCpu, UnitGammaZeroBetaGivesZeroMeanUnitVariance) {
  const int rows = 3, dim = 257;
  std::vector<float> x = Random(rows * dim, 1, 5.0f), out(rows * dim);
  for (float& v : x) v += 2.0f;
  const std::vector<float> g(dim, 1.0f), b(dim, 0.0f);
  layernorm_forward_cpu(x.data(), nullptr, g.data(), b.data(), out.data(), rows, dim, 0.0f);
  for (int r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int c = 0; c < dim; ++c) m += out[r * dim + c];
    m /= dim;
    for (int c = 0; c < dim; ++c) v += (out[r * dim + c] - m) * (out[r * dim + c] - m);
    EXPECT_NEAR(m, 0.0, 1e-5);
    EXPECT_NEAR(v / dim, 1.0, 1e-4);
  }
}

// The vocabulary split of tensor parallelism: the slices' lookups add up to the full lookup
// (each id is in exactly one slice), which is what the all-reduce after the embedding relies on.
TEST(EmbeddingCpu, VocabSlicesSumToTheFullLookup) {
  const int vocab = 12, dim = 5, world = 3, local = vocab / world;
  std::vector<float> table(vocab * dim);
  for (size_t i = 0; i < table.size(); ++i) table[i] = 0.25f * static_cast<float>(i) - 3.0f;
  const std::vector<int32_t> tokens = {0, 3, 4, 7, 8, 11, 5};
  const int n = static_cast<int>(tokens.size());
  std::vector<float> full(n * dim), sum(n * dim, 0.0f), part(n * dim);
  embedding_forward_cpu(tokens.data(), table.data(), full.data(), n, vocab, dim);
  for (int r = 0; r < world; ++r) {
    embedding_forward_cpu(tokens.data(), table.data() + r * local * dim, part.data(), n, local,
                          dim, r * local);
    int nonzero_rows = 0;
    for (int t = 0; t < n; ++t) {
      bool nz = false;
      for (int c = 0; c < dim; ++c) nz = nz || part[t * dim + c] != 0.0f;
      nonzero_rows += nz;
    }
    int in_slice = 0;
    for (int32_t id : tokens) in_slice += id >= r * local && id < (r + 1) * local;
    EXPECT_EQ(nonzero_rows, in_slice) << "rank " << r;
    for (int i = 0; i < n * dim; ++i) sum[i] += part[i];
  }
  EXPECT_EQ(sum, full);
}

TEST(GeluCpu, KnownValues) {
  EXPECT_FLOAT_EQ(gelu_new_scalar_cpu(0.0f), 0.0f);
  EXPECT_NEAR(gelu_new_scalar_cpu(1.0f), 0.8411920f, 1e-6);   // 0.5(1+tanh(0.7978846*1.044715))
  EXPECT_NEAR(gelu_new_scalar_cpu(-1.0f), -0.1588080f, 1e-6);
  EXPECT_NEAR(gelu_new_scalar_cpu(10.0f), 10.0f, 1e-5);
}

// Rotate one head's q at position p and k at position p2 through the twin (block size 1).
std::pair<std::vector<float>, std::vector<float>> RotateAt(const std::vector<float>& q,
                                                           const std::vector<float>& k, int p,
                                                           int p2, int rotary_dim) {
  const int d = static_cast<int>(q.size());
  std::vector<float> row(3 * d), row2(3 * d), kc(2 * d), vc(2 * d);
  std::copy(q.begin(), q.end(), row.begin());
  std::copy(k.begin(), k.end(), row2.begin() + d);
  const int32_t pos[] = {p}, pos2[] = {p2}, slot0[] = {0}, slot1[] = {1};
  rotary_kv_forward_cpu(row.data(), 3 * d, pos, slot0, kc.data(), vc.data(), 1, 1, d,
                        rotary_dim, 1, 10000.0f);
  rotary_kv_forward_cpu(row2.data(), 3 * d, pos2, slot1, kc.data(), vc.data(), 1, 1, d,
                        rotary_dim, 1, 10000.0f);
  return {std::vector<float>(row.begin(), row.begin() + d),
          std::vector<float>(kc.begin() + d, kc.end())};
}

TEST(RotaryKvCpu, DotProductDependsOnlyOnRelativePosition) {
  const std::vector<float> q = Random(64, 2), k = Random(64, 3);
  auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
  };
  auto [q1, k1] = RotateAt(q, k, 10, 3, 32);
  auto [q2, k2] = RotateAt(q, k, 1010, 1003, 32);
  EXPECT_NEAR(dot(q1, k1), dot(q2, k2), 1e-3);
  auto [q0, k0] = RotateAt(q, k, 0, 0, 32);  // position 0 is the identity
  EXPECT_EQ(q0, q);
  EXPECT_EQ(k0, k);
  auto [q3, k3] = RotateAt(q, k, 5, 5, 32);  // dims past rotary_dim pass through
  EXPECT_TRUE(std::equal(q3.begin() + 32, q3.end(), q.begin() + 32));
  EXPECT_FALSE(std::equal(q3.begin(), q3.begin() + 32, q.begin()));
}

TEST(AttentionDecodeCpu, PagedEqualsDenseReference) {
  const int heads = 2, d = 64, bs = 5, len = 23;
  const int blocks = (len + bs - 1) / bs;
  // Block table: a permutation of 2..blocks+1 (0 and 1 hold garbage).
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 2);
  std::shuffle(table.begin(), table.end(), std::mt19937(4));
  const int nb = blocks + 2;
  const std::vector<float> kc = Random(static_cast<size_t>(nb) * heads * bs * d, 5),
                           vc = Random(static_cast<size_t>(nb) * heads * bs * d, 6),
                           q = Random(heads * d, 7);
  std::vector<float> out(heads * d);
  const int32_t lens[] = {len};
  attention_decode_cpu(q.data(), heads * d, kc.data(), vc.data(), table.data(), blocks, lens,
                       out.data(), heads * d, 1, heads, d, bs, 0.125f);
  for (int h = 0; h < heads; ++h) {
    std::vector<double> s(len);
    for (int j = 0; j < len; ++j) {
      const size_t base = ((static_cast<size_t>(table[j / bs]) * heads + h) * bs + j % bs) * d;
      double dot = 0;
      for (int i = 0; i < d; ++i) dot += q[h * d + i] * kc[base + i];
      s[j] = dot * 0.125;
    }
    const double mx = *std::max_element(s.begin(), s.end());
    double z = 0;
    for (double& x : s) z += (x = std::exp(x - mx));
    for (int i = 0; i < d; ++i) {
      double acc = 0;
      for (int j = 0; j < len; ++j) {
        acc += s[j] / z * vc[((static_cast<size_t>(table[j / bs]) * heads + h) * bs + j % bs) * d + i];
      }
      EXPECT_NEAR(out[h * d + i], acc, 1e-5);
    }
  }
}

TEST(AttentionPrefillCpu, ChunkEqualsOneDecodeStepPerQuery) {
  const int heads = 1, d = 64, bs = 4, start = 6, n = 9, len = start + n;
  const int blocks = (len + bs - 1) / bs;
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 0);
  std::reverse(table.begin(), table.end());
  const std::vector<float> kc = Random(static_cast<size_t>(blocks) * bs * d, 8),
                           vc = Random(static_cast<size_t>(blocks) * bs * d, 9),
                           q = Random(static_cast<size_t>(n) * d, 10);
  std::vector<float> out(n * d), one(d);
  const int32_t q_off[] = {0}, st[] = {start}, nn[] = {n};
  attention_prefill_cpu(q.data(), d, kc.data(), vc.data(), table.data(), blocks, q_off, st, nn,
                        out.data(), d, 1, heads, d, bs, 0.125f);
  for (int i = 0; i < n; ++i) {
    const int32_t l[] = {start + i + 1};
    attention_decode_cpu(q.data() + i * d, d, kc.data(), vc.data(), table.data(), blocks, l,
                         one.data(), d, 1, heads, d, bs, 0.125f);
    for (int j = 0; j < d; ++j) EXPECT_FLOAT_EQ(out[i * d + j], one[j]) << "query " << i;
  }
  std::vector<int32_t> ts, tf;
  const int32_t counts[] = {1, 64, 65, 130};
  prefill_tiles(counts, 4, &ts, &tf);
  EXPECT_EQ(ts, (std::vector<int32_t>{0, 1, 2, 2, 3, 3, 3}));
  EXPECT_EQ(tf, (std::vector<int32_t>{0, 0, 0, 64, 0, 64, 128}));
}

TEST(GemmCpu, BiasAndAccumulate) {
  const float a[] = {1, 2, 3, 4, 5, 6};          // 2x3
  const float w[] = {1, 0, 1, 0, 1, 0};          // 2x3
  const float b[] = {10, 20};
  float d[] = {1, 1, 1, 1};
  gemm_bias_cpu(a, w, b, d, 1.0f, 2, 2, 3);
  EXPECT_EQ(std::vector<float>(d, d + 4), (std::vector<float>{15, 23, 21, 26}));
  // BF16 spacing at 1 is 4/512: round to nearest, ties to even.
  EXPECT_EQ(bf16_round_cpu(1.0f + 3.0f / 512), 1.0f + 4.0f / 512);
  EXPECT_EQ(bf16_round_cpu(1.0f + 2.0f / 512), 1.0f);
  EXPECT_EQ(bf16_round_cpu(1.0f + 6.0f / 512), 1.0f + 8.0f / 512);
}

}  // namespace
}  // namespace phi::worker::cuda
