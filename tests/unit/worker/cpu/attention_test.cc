// AttendCausal against a double-precision softmax reference, for every Isa the host runs
// (the others skip), and the bit-for-bit contracts: a query alone equals the same query
// inside a run (every Isa), and AVX2 equals AVX-512 (hosts with both).
#include "services/worker/backends/cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "services/worker/backends/cpu/cpu_features.h"

namespace phi::worker::cpu {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A paged cache of `ctx` random keys and values for one head, in the runner's layout. The
// slots of the last block past `ctx` hold NaN: a kernel that used them would spread NaN.
struct PagedHead {
  int bs = 0, hd = 0;
  std::vector<std::vector<float>> kt, v;  // per block: K^T [hd][bs], V [bs][hd]
  std::vector<const float*> kp, vp;

  PagedHead(int ctx, int block_size, int head_dim, std::mt19937* rng) : bs(block_size), hd(head_dim) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    const int nb = (ctx + bs - 1) / bs;
    kt.assign(nb, std::vector<float>(bs * hd, kNaN));
    v = kt;
    for (int j = 0; j < ctx; ++j) {
      for (int k = 0; k < hd; ++k) {
        kt[j / bs][k * bs + j % bs] = 3.0f * d(*rng);
        v[j / bs][(j % bs) * hd + k] = d(*rng);
      }
    }
    if (ctx > 6) kt[5 / bs][(5 % bs)] = -1e4f;  // key 5, dimension 0: its exp underflows for most queries
    for (int b = 0; b < nb; ++b) {
      kp.push_back(kt[b].data());
      vp.push_back(v[b].data());
    }
  }
  float K(int j, int d) const { return kt[j / bs][d * bs + j % bs]; }
  float V(int j, int d) const { return v[j / bs][(j % bs) * hd + d]; }
};

// Queries q_row .. q_row + nq - 1 of `q` (rows of hd) attended with `isa`. The queries and
// outputs sit in rows wider than hd (the gaps: NaN in q, a sentinel in out, which must
// survive), and the scores scratch is exactly the contract's size, filled with NaN.
std::vector<float> Attend(const PagedHead& h, const std::vector<float>& q, int nq, int ctx0, Isa isa,
                          int q_row = 0) {
  const int q_stride = h.hd + 3, out_stride = h.hd + 5;
  std::vector<float> qs(static_cast<size_t>(nq) * q_stride, kNaN);
  for (int i = 0; i < nq; ++i) std::copy_n(q.begin() + (q_row + i) * h.hd, h.hd, qs.begin() + i * q_stride);
  std::vector<float> scores(static_cast<size_t>(kAttentionQueryTile) * (ctx0 + nq - 1), kNaN);
  std::vector<float> out(static_cast<size_t>(nq) * out_stride, 7.0f);
  AttentionArgs a;
  a.q = qs.data();
  a.q_stride = q_stride;
  a.nq = nq;
  a.ctx0 = ctx0;
  a.k_blocks = h.kp.data();
  a.v_blocks = h.vp.data();
  a.block_size = h.bs;
  a.head_dim = h.hd;
  a.scale_div = std::sqrt(static_cast<float>(h.hd));
  a.scores = scores.data();
  a.out = out.data();
  a.out_stride = out_stride;
  AttendCausal(a, isa);
  std::vector<float> rows(static_cast<size_t>(nq) * h.hd);
  for (int i = 0; i < nq; ++i) {
    for (int k = h.hd; k < out_stride; ++k) {
      EXPECT_EQ(out[i * out_stride + k], 7.0f) << IsaName(isa) << ": wrote past row " << i << "'s head_dim";
    }
    std::copy_n(out.begin() + i * out_stride, h.hd, rows.begin() + i * h.hd);
  }
  return rows;
}

struct Case {
  int bs, hd, ctx0, nq;
};
// Block sizes that split the 8- and 16-key chunks (1, 4, 5, 7) or hold several (16, 32);
// head_dim below 8, not a multiple of 8 (3, 12, 20) or one (8, 64, 80); runs of 1, 8 and
// 16 queries (whole tiles) and 3, 9, 17, 23, 40 (partial ones); long contexts (100, 300).
const Case kCases[] = {{5, 20, 1, 1},   {5, 20, 1, 23},   {16, 64, 1, 40},  {16, 64, 30, 3}, {32, 64, 17, 9},
                       {4, 8, 3, 17},   {16, 80, 100, 8}, {1, 12, 2, 10},   {7, 3, 5, 11},   {16, 20, 9, 16},
                       {5, 64, 300, 9}, {16, 64, 257, 1}, {7, 13, 40, 23}};

std::string CaseName(const Case& c) {
  return "bs " + std::to_string(c.bs) + " hd " + std::to_string(c.hd) + " ctx0 " + std::to_string(c.ctx0) +
         " nq " + std::to_string(c.nq);
}

class AttentionIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }
};

TEST_P(AttentionIsaTest, MatchesSoftmaxReference) {
  const Isa isa = GetParam();
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (const Case& c : kCases) {
    const int ctx = c.ctx0 + c.nq - 1;
    PagedHead h(ctx, c.bs, c.hd, &rng);
    std::vector<float> q(c.nq * c.hd);
    for (auto& x : q) x = d(rng);
    const std::vector<float> out = Attend(h, q, c.nq, c.ctx0, isa);
    for (int i = 0; i < c.nq; ++i) {
      const int n = c.ctx0 + i;
      std::vector<double> s(n);
      double mx = -1e300, sum = 0;
      for (int j = 0; j < n; ++j) {
        double dot = 0;
        for (int k = 0; k < c.hd; ++k) dot += static_cast<double>(q[i * c.hd + k]) * h.K(j, k);
        s[j] = dot / std::sqrt(static_cast<double>(c.hd));
        mx = std::max(mx, s[j]);
      }
      for (int j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - mx));
      for (int k = 0; k < c.hd; ++k) {
        double ref = 0;
        for (int j = 0; j < n; ++j) ref += s[j] / sum * h.V(j, k);
        ASSERT_NEAR(out[i * c.hd + k], ref, 3e-5) << CaseName(c) << " query " << i << " dim " << k;
      }
    }
  }
}

// The SIMD kernels against the portable one, within the reference bound.
TEST_P(AttentionIsaTest, MatchesPortableKernel) {
  const Isa isa = GetParam();
  if (isa == Isa::kPortable) GTEST_SKIP() << "the reference itself";
  std::mt19937 rng(23);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (const Case& c : kCases) {
    PagedHead h(c.ctx0 + c.nq - 1, c.bs, c.hd, &rng);
    std::vector<float> q(c.nq * c.hd);
    for (auto& x : q) x = d(rng);
    const std::vector<float> simd = Attend(h, q, c.nq, c.ctx0, isa);
    const std::vector<float> portable = Attend(h, q, c.nq, c.ctx0, Isa::kPortable);
    for (size_t k = 0; k < simd.size(); ++k) {
      ASSERT_NEAR(simd[k], portable[k], 3e-5) << CaseName(c) << " query " << k / c.hd << " dim " << k % c.hd;
    }
  }
}

// A query attended alone (a decode step) gives bit for bit what it gives inside a run of
// queries (a prefill chunk), wherever it sits in the run's tiles.
TEST_P(AttentionIsaTest, QueryAloneEqualsQueryInsideRun) {
  const Isa isa = GetParam();
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int bs : {5, 16}) {
    for (int hd : {20, 64}) {
      const int ctx0 = 9, nq = 21;
      PagedHead h(ctx0 + nq - 1, bs, hd, &rng);
      std::vector<float> q(nq * hd);
      for (auto& x : q) x = d(rng);
      const std::vector<float> run = Attend(h, q, nq, ctx0, isa);
      for (int i = 0; i < nq; ++i) {
        const std::vector<float> alone = Attend(h, q, 1, ctx0 + i, isa, i);
        for (int k = 0; k < hd; ++k) {
          ASSERT_EQ(alone[k], run[i * hd + k]) << "bs " << bs << " hd " << hd << " query " << i << " dim " << k;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, AttentionIsaTest, ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512),
                         [](const ::testing::TestParamInfo<Isa>& info) { return std::string(IsaName(info.param)); });

// The AVX2 kernel runs the AVX-512 kernel's operations in its order (attention_avx2.cc):
// equal outputs, bit for bit.
TEST(AttentionTest, Avx2EqualsAvx512BitForBit) {
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (!CpuSupports(isa)) GTEST_SKIP() << "CPU lacks " << IsaName(isa);
  }
  std::mt19937 rng(17);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (const Case& c : kCases) {
    PagedHead h(c.ctx0 + c.nq - 1, c.bs, c.hd, &rng);
    std::vector<float> q(c.nq * c.hd);
    for (auto& x : q) x = d(rng);
    const std::vector<float> avx2 = Attend(h, q, c.nq, c.ctx0, Isa::kAvx2);
    const std::vector<float> avx512 = Attend(h, q, c.nq, c.ctx0, Isa::kAvx512);
    for (size_t k = 0; k < avx2.size(); ++k) {
      ASSERT_EQ(avx2[k], avx512[k]) << CaseName(c) << " query " << k / c.hd << " dim " << k % c.hd;
    }
  }
}

}  // namespace
}  // namespace phi::worker::cpu
