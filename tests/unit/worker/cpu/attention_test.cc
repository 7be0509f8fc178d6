#include "services/worker/backends/cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "services/worker/backends/cpu/cpu_features.h"

namespace phi::cpu {
namespace {

// A paged cache of `ctx` random keys and values for one head, in the runner's layout.
struct PagedHead {
  int bs = 0, hd = 0;
  std::vector<std::vector<float>> kt, v;  // per block: K^T [hd][bs], V [bs][hd]
  std::vector<const float*> kp, vp;

  PagedHead(int ctx, int block_size, int head_dim, std::mt19937* rng) : bs(block_size), hd(head_dim) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    const int nb = (ctx + bs - 1) / bs;
    kt.assign(nb, std::vector<float>(bs * hd));
    v = kt;
    for (auto& b : kt) for (auto& x : b) x = 3.0f * d(*rng);
    for (auto& b : v) for (auto& x : b) x = d(*rng);
    if (ctx > 6) kt[5 / bs][(5 % bs)] = -1e4f;  // key 5, dimension 0: its exp underflows for most queries
    for (int b = 0; b < nb; ++b) {
      kp.push_back(kt[b].data());
      vp.push_back(v[b].data());
    }
  }
  float K(int j, int d) const { return kt[j / bs][d * bs + j % bs]; }
  float V(int j, int d) const { return v[j / bs][(j % bs) * hd + d]; }
};

std::vector<float> Attend(const PagedHead& h, const std::vector<float>& q, int nq, int ctx0, bool avx512,
                       int q_row = 0) {
  std::vector<float> scores(kAttentionQueryTile * (ctx0 + nq - 1)), out(nq * h.hd + 3, 7.0f);
  AttentionArgs a;
  a.q = q.data() + q_row * h.hd;
  a.q_stride = h.hd;
  a.nq = nq;
  a.ctx0 = ctx0;
  a.k_blocks = h.kp.data();
  a.v_blocks = h.vp.data();
  a.block_size = h.bs;
  a.head_dim = h.hd;
  a.scale_div = std::sqrt(static_cast<float>(h.hd));
  a.scores = scores.data();
  a.out = out.data();
  a.out_stride = h.hd;
  AttendCausal(a, avx512);
  EXPECT_EQ(out[nq * h.hd], 7.0f) << "wrote past the last output row";
  out.resize(nq * h.hd);
  return out;
}

void CheckAgainstReference(bool avx512) {
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  struct Case { int bs, hd, ctx0, nq; };
  for (Case c : {Case{5, 20, 1, 1}, Case{5, 20, 1, 23}, Case{16, 64, 1, 40}, Case{16, 64, 30, 3},
                 Case{32, 64, 17, 9}, Case{4, 8, 3, 17}, Case{16, 80, 100, 8}}) {
    const int ctx = c.ctx0 + c.nq - 1;
    PagedHead h(ctx, c.bs, c.hd, &rng);
    std::vector<float> q(c.nq * c.hd);
    for (auto& x : q) x = d(rng);
    const std::vector<float> out = Attend(h, q, c.nq, c.ctx0, avx512);
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
        ASSERT_NEAR(out[i * c.hd + k], ref, 3e-5) << "bs " << c.bs << " hd " << c.hd << " query " << i << " dim " << k;
      }
    }
  }
}

TEST(AttentionTest, PortableMatchesSoftmaxReference) { CheckAgainstReference(false); }

TEST(AttentionTest, Avx512MatchesSoftmaxReference) {
  if (!CpuHasAvx512F()) GTEST_SKIP() << "CPU lacks AVX-512F";
  CheckAgainstReference(true);
}

// A query attended alone (a decode step) gives bit for bit what it gives inside a run of
// queries (a prefill chunk), wherever it sits in the run's tiles.
TEST(AttentionTest, QueryAloneEqualsQueryInsideRun) {
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (bool avx512 : {false, true}) {
    if (avx512 && !CpuHasAvx512F()) continue;
    for (int bs : {5, 16}) {
      const int hd = 64, ctx0 = 9, nq = 21;
      PagedHead h(ctx0 + nq - 1, bs, hd, &rng);
      std::vector<float> q(nq * hd);
      for (auto& x : q) x = d(rng);
      const std::vector<float> run = Attend(h, q, nq, ctx0, avx512);
      for (int i = 0; i < nq; ++i) {
        const std::vector<float> alone = Attend(h, q, 1, ctx0 + i, avx512, i);
        for (int k = 0; k < hd; ++k) {
          ASSERT_EQ(alone[k], run[i * hd + k]) << "avx512 " << avx512 << " bs " << bs << " query " << i << " dim " << k;
        }
      }
    }
  }
}

}  // namespace
}  // namespace phi::cpu
