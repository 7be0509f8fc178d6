// Row and element-wise ops against double-precision references on seeded random inputs.
#include "services/worker/backends/cpu/ops.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <random>
#include <vector>

#include "services/worker/backends/cpu/cpu_features.h"

namespace phi::cpu {
namespace {

void CheckGelu(void (*gelu)(const float*, int64_t, float*)) {
  std::vector<float> x;
  for (float v = -12.0f; v <= 12.0f; v += 0.0137f) x.push_back(v);
  x.push_back(0.0f);
  x.push_back(1e-7f);
  x.push_back(-50.0f);
  x.push_back(50.0f);
  std::vector<float> y(x.size() + 1, 42.0f);
  gelu(x.data(), static_cast<int64_t>(x.size()), y.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    ASSERT_NEAR(y[i], ref, 2e-7 * std::max(1.0, std::fabs(v))) << "x = " << v;
  }
  ASSERT_EQ(y.back(), 42.0f) << "wrote past n";
}

TEST(OpsTest, GeluNewMatchesTanhFormula) { CheckGelu(gelu_new_cpu); }

TEST(OpsTest, GeluNewAvx512MatchesTanhFormula) {
  if (!CpuHasAvx512F()) GTEST_SKIP() << "CPU lacks AVX-512F";
  CheckGelu(kernels::gelu_new_avx512);
}

TEST(OpsTest, LayerNormMatchesDefinition) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.5f, 3.0f);
  const int n = 333;
  std::vector<float> x(n), g(n), b(n), y(n);
  for (int i = 0; i < n; ++i) {
    x[i] = d(rng);
    g[i] = d(rng);
    b[i] = d(rng);
  }
  layer_norm_cpu(x.data(), g.data(), b.data(), 1e-5, n, y.data());
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= n;
  for (float v : x) var += (v - mean) * (v - mean);
  var /= n;
  for (int i = 0; i < n; ++i) {
    const double ref = (x[i] - mean) / std::sqrt(var + 1e-5) * g[i] + b[i];
    ASSERT_NEAR(y[i], ref, 1e-5 * (1 + std::fabs(ref)));
  }
}

TEST(OpsTest, RotaryRotatesPairs) {
  std::vector<float> v = {1, 2, 3, 4, 5, 6};  // half = 2: pairs (0,2), (1,3); 4, 5 untouched
  const float c[2] = {std::cos(0.3f), std::cos(1.1f)}, s[2] = {std::sin(0.3f), std::sin(1.1f)};
  rotary_cpu(v.data(), c, s, 2);
  EXPECT_NEAR(v[0], 1 * c[0] - 3 * s[0], 1e-6);
  EXPECT_NEAR(v[2], 3 * c[0] + 1 * s[0], 1e-6);
  EXPECT_NEAR(v[1], 2 * c[1] - 4 * s[1], 1e-6);
  EXPECT_NEAR(v[3], 4 * c[1] + 2 * s[1], 1e-6);
  EXPECT_EQ(v[4], 5);
  EXPECT_EQ(v[5], 6);
}

}  // namespace
}  // namespace phi::cpu
