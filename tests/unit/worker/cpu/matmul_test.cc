// The AVX-512 kernels against the portable ones (and a double-precision reference) on
// seeded random inputs with awkward shapes: M not a multiple of the register tile, N not
// a multiple of 8, K not a multiple of 32, one row, accumulate and bias on and off.
#include "services/worker/backends/cpu/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "services/worker/backends/cpu/cpu_features.h"
#include "services/worker/model/dtype.h"

namespace phi::cpu {
namespace {

struct Case {
  int64_t m, n, k;
};

PackedMatrix RandomMatrix(WeightFormat f, int64_t n, int64_t k, std::mt19937* rng, std::vector<double>* dense) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  PackedMatrix w(f, n, k);
  dense->assign(n * k, 0.0);
  std::vector<uint16_t> bf16(n * k);
  std::vector<float> f32(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    float v = dist(*rng);
    if (f == WeightFormat::kBF16) {
      bf16[i] = model::F32ToBf16(v);
      v = model::Bf16ToF32(bf16[i]);
    }
    f32[i] = v;
    (*dense)[i] = v;
  }
  // Filled in 2 x 2 blocks, as the runner fills the fused matrices (q|k|v|fc1 rows start
  // at multiples of the attention width, fc2 columns after the dense ones).
  const int64_t split_c = k / 3, split_r = n / 2 + 1;
  for (int64_t part = 0; part < 4; ++part) {
    const int64_t c0 = part % 2 == 0 ? 0 : split_c, cols = part % 2 == 0 ? split_c : k - split_c;
    const int64_t r0 = part / 2 == 0 ? 0 : split_r, rows = part / 2 == 0 ? std::min(split_r, n) : n - split_r;
    if (cols <= 0 || rows <= 0) continue;
    std::vector<uint16_t> b(rows * cols);
    std::vector<float> v(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        b[r * cols + c] = bf16[(r0 + r) * k + c0 + c];
        v[r * cols + c] = f32[(r0 + r) * k + c0 + c];
      }
    }
    w.SetBlock(r0, c0, rows, cols, f == WeightFormat::kBF16 ? static_cast<const void*>(b.data()) : v.data());
  }
  return w;
}

void CheckPath(WeightFormat f, KernelPath path, int threads) {
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  ThreadPool pool(threads);
  MatMul mm(path, &pool);
  for (Case c : {Case{1, 1, 1}, Case{1, 13, 37}, Case{2, 64, 64}, Case{3, 17, 100}, Case{5, 33, 65}, Case{7, 9, 300},
                 Case{16, 40, 96}, Case{33, 31, 2048}, Case{15, 70, 2500}, Case{29, 100, 64}}) {
    std::vector<double> wd;
    PackedMatrix w = RandomMatrix(f, c.n, c.k, &rng, &wd);
    const int64_t ldx = c.k + 3, ldy = c.n + 5;
    std::vector<float> x(c.m * ldx), bias(c.n), y(c.m * ldy), y0;
    for (auto& v : x) v = dist(rng);
    for (auto& v : bias) v = dist(rng);
    for (auto& v : y) v = dist(rng);
    y0 = y;
    for (bool accumulate : {false, true}) {
      y = y0;
      mm.Run(x.data(), c.m, ldx, w, accumulate ? bias.data() : nullptr, y.data(), ldy, accumulate);
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
          double ref = accumulate ? y0[i * ldy + j] + bias[j] : 0.0;
          double mag = std::fabs(ref);
          for (int64_t l = 0; l < c.k; ++l) {
            const double xv = x[i * ldx + l];  // activations are never rounded
            ref += xv * wd[j * c.k + l];
            mag += std::fabs(xv * wd[j * c.k + l]);
          }
          ASSERT_NEAR(y[i * ldy + j], ref, 1e-5 * mag + 1e-6)
              << "m " << c.m << " n " << c.n << " k " << c.k << " at " << i << "," << j << " acc " << accumulate;
        }
      }
      // Padding columns of y between n and ldy are untouched.
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = c.n; j < ldy; ++j) ASSERT_EQ(y[i * ldy + j], y0[i * ldy + j]);
    }
  }
}

// A row's result is bit-identical whether it is computed alone or in a batch of any size
// (the engine's promise that batching never changes a sequence's output).
void CheckBatchInvariance(WeightFormat f, KernelPath path) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  ThreadPool pool(2);
  MatMul mm(path, &pool);
  const int64_t n = 96, k = 2100;
  std::vector<double> wd;
  PackedMatrix w = RandomMatrix(f, n, k, &rng, &wd);
  std::vector<float> bias(n);
  for (auto& v : bias) v = dist(rng);
  for (int64_t m : {1, 5, 14, 15, 40}) {
    std::vector<float> x(m * k), y(m * n), y1(n);
    for (auto& v : x) v = dist(rng);
    mm.Run(x.data(), m, k, w, bias.data(), y.data(), n, false);
    for (int64_t i = 0; i < m; ++i) {
      mm.Run(x.data() + i * k, 1, k, w, bias.data(), y1.data(), n, false);
      for (int64_t j = 0; j < n; ++j) ASSERT_EQ(y[i * n + j], y1[j]) << "m " << m << " row " << i << " col " << j;
    }
  }
}

TEST(MatMulTest, BatchInvariantAvx512) {
  if (!CpuHasAvx512F()) GTEST_SKIP() << "CPU lacks AVX-512F";
  CheckBatchInvariance(WeightFormat::kBF16, KernelPath::kAuto);
  CheckBatchInvariance(WeightFormat::kF32, KernelPath::kAuto);
}

TEST(MatMulTest, BatchInvariantPortable) { CheckBatchInvariance(WeightFormat::kBF16, KernelPath::kPortable); }

TEST(MatMulTest, PortableF32) { CheckPath(WeightFormat::kF32, KernelPath::kPortable, 2); }
TEST(MatMulTest, PortableBf16) { CheckPath(WeightFormat::kBF16, KernelPath::kPortable, 2); }

TEST(MatMulTest, Avx512F32) {
  if (!CpuHasAvx512F()) GTEST_SKIP() << "CPU lacks AVX-512F";
  CheckPath(WeightFormat::kF32, KernelPath::kAuto, 2);
  CheckPath(WeightFormat::kF32, KernelPath::kAuto, 1);
}

TEST(MatMulTest, Avx512Bf16) {
  if (!CpuHasAvx512F()) GTEST_SKIP() << "CPU lacks AVX-512F";
  CheckPath(WeightFormat::kBF16, KernelPath::kAuto, 2);
  CheckPath(WeightFormat::kBF16, KernelPath::kAuto, 3);
}

TEST(ThreadPoolTest, ParallelForCoversRangeOnceInGrains) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 7, 8, 9, 100}) {
      std::vector<int> hits(n, 0);
      pool.ParallelFor(n, 8, [&](int64_t b, int64_t e) {
        EXPECT_EQ(b % 8, 0);
        for (int64_t i = b; i < e; ++i) ++hits[i];
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "threads " << threads << " n " << n;
    }
  }
}

}  // namespace
}  // namespace phi::cpu
