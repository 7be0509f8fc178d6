// Row and element-wise ops against double-precision references on seeded random inputs, for
// every Isa the host runs (the others skip), and AVX2 = AVX-512 bit for bit (hosts with both).
#include "services/worker/backends/cpu/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "services/worker/backends/cpu/cpu_features.h"

namespace phi::worker::cpu {
namespace {

// Lengths around the 8- and 16-lane widths, a Phi-1.5 row (2048) and odd ones.
const int64_t kLengths[] = {1, 2, 7, 8, 9, 15, 16, 17, 20, 31, 333, 2048, 2051};

std::vector<float> GeluInputs() {
  std::vector<float> x;
  for (float v = -12.0f; v <= 12.0f; v += 0.0137f) x.push_back(v);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  x.push_back(1e-7f);
  x.push_back(-50.0f);
  x.push_back(50.0f);
  x.push_back(-100.0f);
  x.push_back(1e4f);
  return x;
}

struct LayerNormRow {
  std::vector<float> x, g, b;
};

LayerNormRow RandomRow(int64_t n, std::mt19937* rng) {
  std::normal_distribution<float> d(0.5f, 3.0f);
  LayerNormRow r{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  for (int64_t i = 0; i < n; ++i) {
    r.x[i] = d(*rng);
    r.g[i] = d(*rng);
    r.b[i] = d(*rng);
  }
  return r;
}

// y[0, n) of `isa`, with a sentinel after n that must survive.
std::vector<float> RunLayerNorm(const LayerNormRow& r, Isa isa) {
  const int64_t n = static_cast<int64_t>(r.x.size());
  std::vector<float> y(n + 1, 42.0f);
  LayerNorm(r.x.data(), r.g.data(), r.b.data(), 1e-5, n, y.data(), isa);
  EXPECT_EQ(y[n], 42.0f) << IsaName(isa) << ": wrote past n = " << n;
  y.resize(n);
  return y;
}

std::vector<float> RunGelu(const std::vector<float>& x, int64_t n, Isa isa) {
  std::vector<float> y(n + 1, 42.0f);
  GeluNew(x.data(), n, y.data(), isa);
  EXPECT_EQ(y[n], 42.0f) << IsaName(isa) << ": wrote past n = " << n;
  y.resize(n);
  return y;
}

class OpsIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }
};

TEST_P(OpsIsaTest, GeluNewMatchesTanhFormula) {
  const Isa isa = GetParam();
  const std::vector<float> x = GeluInputs();
  const std::vector<float> y = RunGelu(x, static_cast<int64_t>(x.size()), isa);
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    ASSERT_NEAR(y[i], ref, 2e-7 * std::max(1.0, std::fabs(v))) << "x = " << v;
  }
}

// Every tail length: the first n outputs of a prefix equal those of the whole input.
TEST_P(OpsIsaTest, GeluNewTailsEqualWholeRun) {
  const Isa isa = GetParam();
  const std::vector<float> inputs = GeluInputs();
  std::vector<float> x(4096);  // longer than every length, cycling through the inputs
  for (size_t i = 0; i < x.size(); ++i) x[i] = inputs[i % inputs.size()];
  const std::vector<float> whole = RunGelu(x, static_cast<int64_t>(x.size()), isa);
  EXPECT_TRUE(RunGelu(x, 0, isa).empty());
  for (int64_t n : kLengths) {
    const std::vector<float> y = RunGelu(x, n, isa);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], whole[i]) << "n " << n << " i " << i;
  }
}

TEST_P(OpsIsaTest, LayerNormMatchesDefinition) {
  const Isa isa = GetParam();
  std::mt19937 rng(7);
  for (int64_t n : kLengths) {
    const LayerNormRow r = RandomRow(n, &rng);
    const std::vector<float> y = RunLayerNorm(r, isa);
    double mean = 0, var = 0;
    for (float v : r.x) mean += v;
    mean /= n;
    for (float v : r.x) var += (v - mean) * (v - mean);
    var /= n;
    for (int64_t i = 0; i < n; ++i) {
      const double ref = (r.x[i] - mean) / std::sqrt(var + 1e-5) * r.g[i] + r.b[i];
      ASSERT_NEAR(y[i], ref, 1e-5 * (1 + std::fabs(ref))) << "n " << n << " i " << i;
    }
  }
}

// A row far from zero (mean 1000, spread 1): the two-pass variance keeps its precision.
TEST_P(OpsIsaTest, LayerNormOfAnOffsetRow) {
  const Isa isa = GetParam();
  std::mt19937 rng(3);
  std::normal_distribution<float> d(1000.0f, 1.0f);
  LayerNormRow r = RandomRow(2048, &rng);
  for (float& v : r.x) v = d(rng);
  const std::vector<float> y = RunLayerNorm(r, isa);
  double mean = 0, var = 0;
  for (float v : r.x) mean += v;
  mean /= 2048;
  for (float v : r.x) var += (v - mean) * (v - mean);
  var /= 2048;
  for (int i = 0; i < 2048; ++i) {
    const double ref = (r.x[i] - mean) / std::sqrt(var + 1e-5) * r.g[i] + r.b[i];
    ASSERT_NEAR(y[i], ref, 1e-3 * (1 + std::fabs(ref))) << "i " << i;  // the float mean: ~3e-5 off
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, OpsIsaTest, ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512),
                         [](const ::testing::TestParamInfo<Isa>& info) { return std::string(IsaName(info.param)); });

// The AVX2 kernels run the AVX-512 ones' operations in their order (ops_avx2.cc).
TEST(OpsTest, Avx2EqualsAvx512BitForBit) {
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (!CpuSupports(isa)) GTEST_SKIP() << "CPU lacks " << IsaName(isa);
  }
  const std::vector<float> x = GeluInputs();
  const std::vector<float> g2 = RunGelu(x, static_cast<int64_t>(x.size()), Isa::kAvx2);
  const std::vector<float> g512 = RunGelu(x, static_cast<int64_t>(x.size()), Isa::kAvx512);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(g2[i], g512[i]) << "gelu_new x = " << x[i];
  std::mt19937 rng(13);
  for (int64_t n : kLengths) {
    const LayerNormRow r = RandomRow(n, &rng);
    const std::vector<float> y2 = RunLayerNorm(r, Isa::kAvx2), y512 = RunLayerNorm(r, Isa::kAvx512);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y2[i], y512[i]) << "LayerNorm n " << n << " i " << i;
  }
}

TEST(OpsTest, RotaryRotatesPairs) {
  std::vector<float> v = {1, 2, 3, 4, 5, 6};  // half = 2: pairs (0,2), (1,3); 4, 5 untouched
  const float c[2] = {std::cos(0.3f), std::cos(1.1f)}, s[2] = {std::sin(0.3f), std::sin(1.1f)};
  Rotary(v.data(), c, s, 2);
  EXPECT_NEAR(v[0], 1 * c[0] - 3 * s[0], 1e-6);
  EXPECT_NEAR(v[2], 3 * c[0] + 1 * s[0], 1e-6);
  EXPECT_NEAR(v[1], 2 * c[1] - 4 * s[1], 1e-6);
  EXPECT_NEAR(v[3], 4 * c[1] + 2 * s[1], 1e-6);
  EXPECT_EQ(v[4], 5);
  EXPECT_EQ(v[5], 6);
}

}  // namespace
}  // namespace phi::worker::cpu
