// The GEMM kernels of every instruction set and weight format against a double-precision
// reference on seeded random inputs with awkward shapes (M not a multiple of any register
// tile, N not a multiple of 8, K not a multiple of 32, odd and across K blocks, one row,
// accumulate and bias on and off), batch invariance per path, INT8 quantization, and the
// AVX2 and AVX-512 kernels equal bit for bit where the host has both. The avx512bf16 path's
// BF16 GEMM rounds the activations to BF16 (vdpbf16ps), so its reference does too. A path
// the host lacks skips with a message naming it (the CI host may be either kind).
#include "services/worker/backends/cpu/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "services/worker/backends/cpu/cpu_features.h"
#include "services/worker/model/dtype.h"

namespace phi::worker::cpu {
namespace {

struct Case {
  int64_t m, n, k;
};

// A random matrix in format f; `dense` gets the weights the kernels multiply by (BF16 as
// rounded, INT8 dequantized).
PackedMatrix RandomMatrix(WeightFormat f, int64_t n, int64_t k, std::mt19937* rng, std::vector<double>* dense) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const WeightFormat load = f == WeightFormat::kInt8 ? WeightFormat::kF32 : f;
  PackedMatrix w(load, n, k);
  std::vector<uint16_t> bf16(n * k);
  std::vector<float> f32(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    float v = dist(*rng);
    if (load == WeightFormat::kBF16) {
      bf16[i] = model::F32ToBf16(v);
      v = model::Bf16ToF32(bf16[i]);
    }
    f32[i] = v;
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
    w.SetBlock(r0, c0, rows, cols, load == WeightFormat::kBF16 ? static_cast<const void*>(b.data()) : v.data());
  }
  if (f == WeightFormat::kInt8) w = PackedMatrix::QuantizeInt8(w);
  dense->assign(n * k, 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) (*dense)[r * k + c] = w.At(r, c);
  if (f != WeightFormat::kInt8) {
    for (int64_t i = 0; i < n * k; ++i) EXPECT_EQ((*dense)[i], f32[i]) << "At() of element " << i;
  }
  return w;
}

struct Path {
  Isa isa;
  WeightFormat format;
};

// vcvtne2ps2bf16's rounding (Intel SDM): to nearest even, zero and denormals to a signed
// zero, NaN quieted.
float RoundToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0) return std::signbit(f) ? -0.0f : 0.0f;
  return model::Bf16ToF32(model::F32ToBf16(f));
}

// The activations a path multiplies by: BF16-rounded on the vdpbf16ps GEMM, else as given.
bool RoundsActivations(const Path& p) { return p.isa == Isa::kAvx512Bf16 && p.format == WeightFormat::kBF16; }

std::string PathName(const ::testing::TestParamInfo<Path>& info) {
  return std::string(IsaName(info.param.isa)) + "_" + std::string(WeightFormatName(info.param.format));
}

class MatMulPathTest : public ::testing::TestWithParam<Path> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam().isa)) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam().isa);
  }
};

// One GEMM against the double reference on the activations the path multiplies by: within
// 1e-5 of the sum of the products' magnitudes (F32 accumulation of up to 1024 products per
// K block), both with accumulate and bias off and on; y's padding columns untouched.
void CheckCase(const Path& path, MatMul* mm, Case c, std::mt19937* rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<double> wd;
  PackedMatrix w = RandomMatrix(path.format, c.n, c.k, rng, &wd);
  const int64_t ldx = c.k + 3, ldy = c.n + 5;
  std::vector<float> x(c.m * ldx), bias(c.n), y(c.m * ldy), y0;
  for (auto& v : x) v = dist(*rng);
  for (auto& v : bias) v = dist(*rng);
  for (auto& v : y) v = dist(*rng);
  y0 = y;
  const bool round = RoundsActivations(path);
  for (bool accumulate : {false, true}) {
    y = y0;
    mm->Run(x.data(), c.m, ldx, w, accumulate ? bias.data() : nullptr, y.data(), ldy, accumulate);
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t j = 0; j < c.n; ++j) {
        double ref = accumulate ? y0[i * ldy + j] + bias[j] : 0.0;
        double mag = std::fabs(ref);
        for (int64_t l = 0; l < c.k; ++l) {
          const float xf = x[i * ldx + l];
          const double xv = round ? RoundToBf16(xf) : xf;
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

void CheckAgainstReference(const Path& path, int threads) {
  std::mt19937 rng(42);
  ThreadPool pool(threads);
  MatMul mm(path.isa, &pool);
  for (Case c : {Case{1, 1, 1}, Case{1, 13, 37}, Case{2, 64, 64}, Case{3, 17, 100}, Case{5, 33, 65}, Case{7, 9, 300},
                 Case{16, 40, 96}, Case{33, 31, 2048}, Case{15, 70, 2500}, Case{29, 100, 64}, Case{4, 200, 1030},
                 Case{13, 7, 9}, Case{2, 45, 2049}, Case{20, 50, 1025}}) {
    CheckCase(path, &mm, c, &rng);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST_P(MatMulPathTest, MatchesDoubleReference) {
  CheckAgainstReference(GetParam(), 2);
  CheckAgainstReference(GetParam(), 1);
  CheckAgainstReference(GetParam(), 3);
}

// Every batch size through the decode tiles (m <= 6), the short bands and full 14-row
// bands with a partial one, over an odd K that crosses a K block and N not a multiple of 32.
TEST_P(MatMulPathTest, MatchesDoubleReferenceForEveryMUpTo40) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  MatMul mm(GetParam().isa, &pool);
  for (int64_t m = 1; m <= 40; ++m) {
    CheckCase(GetParam(), &mm, Case{m, 70, 1025}, &rng);
    if (HasFatalFailure()) return;
  }
}

// A row's result is bit-identical whether it is computed alone or in a batch of any size
// (the engine's promise that batching never changes a sequence's output).
TEST_P(MatMulPathTest, RowAloneEqualsRowInAnyBatch) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  ThreadPool pool(2);
  MatMul mm(GetParam().isa, &pool);
  // K across blocks, even and odd (the odd one's last block holds one k); N a multiple of
  // 32 and not.
  for (Case shape : {Case{0, 96, 2100}, Case{0, 100, 2049}}) {
    const int64_t n = shape.n, k = shape.k;
    std::vector<double> wd;
    PackedMatrix w = RandomMatrix(GetParam().format, n, k, &rng, &wd);
    std::vector<float> bias(n);
    for (auto& v : bias) v = dist(rng);
    for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 13, 14, 15, 29, 40}) {
      std::vector<float> x(m * k), y(m * n), y1(n);
      for (auto& v : x) v = dist(rng);
      mm.Run(x.data(), m, k, w, bias.data(), y.data(), n, false);
      for (int64_t i = 0; i < m; ++i) {
        mm.Run(x.data() + i * k, 1, k, w, bias.data(), y1.data(), n, false);
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_EQ(y[i * n + j], y1[j]) << "k " << k << " m " << m << " row " << i << " col " << j;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryPath, MatMulPathTest,
                         ::testing::Values(Path{Isa::kPortable, WeightFormat::kF32},
                                           Path{Isa::kPortable, WeightFormat::kBF16},
                                           Path{Isa::kPortable, WeightFormat::kInt8},
                                           Path{Isa::kAvx2, WeightFormat::kF32}, Path{Isa::kAvx2, WeightFormat::kBF16},
                                           Path{Isa::kAvx2, WeightFormat::kInt8},
                                           Path{Isa::kAvx512, WeightFormat::kF32},
                                           Path{Isa::kAvx512, WeightFormat::kBF16},
                                           Path{Isa::kAvx512, WeightFormat::kInt8},
                                           Path{Isa::kAvx512Bf16, WeightFormat::kF32},
                                           Path{Isa::kAvx512Bf16, WeightFormat::kBF16},
                                           Path{Isa::kAvx512Bf16, WeightFormat::kInt8}),
                         PathName);

// avx512bf16's F32 and INT8 GEMMs are the AVX-512 kernels: equal bit for bit.
TEST(MatMulTest, Avx512Bf16EqualsAvx512ForF32AndInt8Weights) {
  if (!CpuSupports(Isa::kAvx512Bf16)) GTEST_SKIP() << "CPU lacks " << IsaName(Isa::kAvx512Bf16);
  std::mt19937 rng(13);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  ThreadPool pool(2);
  MatMul a512(Isa::kAvx512, &pool), abf(Isa::kAvx512Bf16, &pool);
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kInt8}) {
    for (Case c : {Case{1, 77, 2101}, Case{17, 100, 1500}}) {
      std::vector<double> wd;
      PackedMatrix w = RandomMatrix(f, c.n, c.k, &rng, &wd);
      std::vector<float> x(c.m * c.k), bias(c.n), a(c.m * c.n), b(c.m * c.n);
      for (auto& v : x) v = dist(rng);
      for (auto& v : bias) v = dist(rng);
      a512.Run(x.data(), c.m, c.k, w, bias.data(), a.data(), c.n, false);
      abf.Run(x.data(), c.m, c.k, w, bias.data(), b.data(), c.n, false);
      for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << WeightFormatName(f) << " m " << c.m << " at " << i;
    }
  }
}

// The vdpbf16ps GEMM rounds each activation to the nearest BF16, ties to even: through an
// identity weight matrix (every product but one is 0, so the sums are exact) y is the
// rounded activation.
TEST(MatMulTest, Avx512Bf16RoundsActivationsToNearestEven) {
  if (!CpuSupports(Isa::kAvx512Bf16)) GTEST_SKIP() << "CPU lacks " << IsaName(Isa::kAvx512Bf16);
  const float u = std::ldexp(1.0f, -8);  // half a BF16 step at 1
  const float e = std::ldexp(1.0f, -20);
  // Ties go to the even neighbour (1, 1 + 4u, -1, 256, 260), others to the nearest.
  const std::vector<float> x = {1.0f + u, 1.0f + 3 * u, 1.0f + u + e, -(1.0f + u), 257.0f, 259.0f, 1.0f + u - e};
  const std::vector<float> want = {1.0f, 1.0f + 4 * u, 1.0f + 2 * u, -1.0f, 256.0f, 260.0f, 1.0f};
  const int64_t k = static_cast<int64_t>(x.size());  // odd: the last pair is (6, none)
  std::vector<uint16_t> eye(k * k, 0);
  for (int64_t i = 0; i < k; ++i) eye[i * k + i] = model::F32ToBf16(1.0f);
  PackedMatrix w(WeightFormat::kBF16, k, k);
  w.SetBlock(0, 0, k, k, eye.data());
  ThreadPool pool(1);
  MatMul mm(Isa::kAvx512Bf16, &pool);
  std::vector<float> y(k);
  mm.Run(x.data(), 1, k, w, nullptr, y.data(), k, false);
  for (int64_t j = 0; j < k; ++j) EXPECT_EQ(y[j], want[j]) << "x " << x[j];
  EXPECT_EQ(RoundToBf16(x[0]), 1.0f);  // the reference rounds the same way
}

// The AVX2 and AVX-512 kernels make the same FMAs in the same order: equal bit for bit.
TEST(MatMulTest, Avx2EqualsAvx512BitForBit) {
  if (!CpuSupports(Isa::kAvx512)) GTEST_SKIP() << "CPU lacks avx512 (the AVX2 kernels are checked against the reference)";
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  ThreadPool pool(2);
  MatMul m2(Isa::kAvx2, &pool), m512(Isa::kAvx512, &pool);
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kInt8}) {
    for (Case c : {Case{1, 77, 2100}, Case{3, 64, 300}, Case{16, 100, 1500}, Case{29, 33, 65}}) {
      std::vector<double> wd;
      PackedMatrix w = RandomMatrix(f, c.n, c.k, &rng, &wd);
      std::vector<float> x(c.m * c.k), bias(c.n), a(c.m * c.n), b(c.m * c.n);
      for (auto& v : x) v = dist(rng);
      for (auto& v : bias) v = dist(rng);
      for (auto& v : a) v = dist(rng);
      b = a;
      m2.Run(x.data(), c.m, c.k, w, bias.data(), a.data(), c.n, true);
      m512.Run(x.data(), c.m, c.k, w, bias.data(), b.data(), c.n, true);
      for (size_t i = 0; i < a.size(); ++i) {
        ASSERT_EQ(a[i], b[i]) << WeightFormatName(f) << " m " << c.m << " n " << c.n << " k " << c.k << " at " << i;
      }
    }
  }
}

// Per output feature and K block: scale = max|w| / 127, q = round(w / scale), so every
// weight is within half a step of its value and the block's largest lands on +-127.
TEST(MatMulTest, QuantizeInt8RoundsToTheNearestStepPerRowAndKBlock) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t n = 37, k = 2100;
  PackedMatrix f(WeightFormat::kF32, n, k);
  std::vector<float> v(n * k);
  for (auto& x : v) x = dist(rng);
  for (int64_t c = 0; c < 1024; ++c) v[5 * k + c] = 0.0f;  // an all-zero group: scale 0, no NaN
  f.SetBlock(0, 0, n, k, v.data());
  const PackedMatrix q = PackedMatrix::QuantizeInt8(f);
  ASSERT_EQ(q.format(), WeightFormat::kInt8);
  EXPECT_EQ(q.k_blocks(), 3);
  EXPECT_EQ(q.payload_bytes(), static_cast<size_t>(n * k + n * 3 * 4));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t c0 = b * 1024, c1 = std::min<int64_t>(k, c0 + 1024);
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(v[r * k + c]));
      const float step = amax / 127.0f;
      for (int64_t c = c0; c < c1; ++c) {
        const float got = q.At(r, c);
        ASSERT_TRUE(std::isfinite(got));
        ASSERT_LE(std::fabs(got - v[r * k + c]), 0.5f * step * (1 + 1e-5f) + 1e-30f) << "row " << r << " col " << c;
        if (std::fabs(v[r * k + c]) == amax && amax > 0) {
          ASSERT_NEAR(std::fabs(got), amax, 1e-6f * amax);
        }
      }
    }
  }
}

TEST(CpuFeaturesTest, ResolvesAutoToTheBestAndRefusesWhatTheHostLacks) {
  EXPECT_EQ(*ResolveKernelPath(KernelPath::kAuto), BestIsa());
  EXPECT_EQ(*ResolveKernelPath(KernelPath::kPortable), Isa::kPortable);
  for (KernelPath p : {KernelPath::kAvx2, KernelPath::kAvx512, KernelPath::kAvx512Bf16}) {
    const Isa isa = p == KernelPath::kAvx2 ? Isa::kAvx2 : p == KernelPath::kAvx512 ? Isa::kAvx512 : Isa::kAvx512Bf16;
    absl::StatusOr<Isa> r = ResolveKernelPath(p);
    if (CpuSupports(isa)) {
      EXPECT_EQ(*r, isa);
    } else {
      ASSERT_FALSE(r.ok());
      EXPECT_NE(r.status().message().find(std::string(IsaName(isa))), std::string::npos) << r.status();
    }
  }
  KernelPath k;
  EXPECT_TRUE(ParseKernelPath("avx2", &k));
  EXPECT_EQ(k, KernelPath::kAvx2);
  EXPECT_TRUE(ParseKernelPath("avx512bf16", &k));
  EXPECT_EQ(k, KernelPath::kAvx512Bf16);
  EXPECT_EQ(IsaName(Isa::kAvx512Bf16), "avx512bf16");
  EXPECT_FALSE(ParseKernelPath("sse4", &k));
  // avx512bf16 needs the AVX-512 set besides AVX512_BF16.
  EXPECT_TRUE(!CpuSupports(Isa::kAvx512Bf16) || CpuSupports(Isa::kAvx512));
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
}  // namespace phi::worker::cpu
