// Helpers for the CUDA kernel tests: GPU detection (tests skip cleanly without one), device
// buffers, BF16 round trips, seeded random data and the relative norm error.
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_GPU_TEST_UTIL_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_GPU_TEST_UTIL_H_

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/kernels.h"
#include "tests/unit/worker/cuda/kernels_cpu.h"

namespace phi::worker::cuda::testing {

// Empty when a GPU is usable, else why not.
inline std::string NoGpuReason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(err);
  }
  if (n == 0) return "cudaGetDeviceCount returned 0 devices";
  return "";
}

#define PHI_REQUIRE_GPU()                                                         \
  do {                                                                            \
    const std::string phi_no_gpu_ = ::phi::worker::cuda::testing::NoGpuReason();  \
    if (!phi_no_gpu_.empty()) GTEST_SKIP() << "no CUDA GPU (" << phi_no_gpu_ << ")"; \
  } while (0)

// For tests whose point is a timing: on the CPU emulator (tests/cuda_emu) it means nothing.
#ifdef PHI_CUDA_EMULATION
#define PHI_SKIP_ON_EMULATOR() GTEST_SKIP() << "a timing; meaningless on the CPU emulator"
#else
#define PHI_SKIP_ON_EMULATOR() \
  do {                         \
  } while (0)
#endif

#define PHI_ASSERT_CUDA_OK(expr)                            \
  do {                                                      \
    const ::phi::worker::cuda::CudaStatus phi_st_ = (expr); \
    ASSERT_TRUE(phi_st_.ok()) << phi_st_.message();         \
  } while (0)

#define PHI_ASSERT_CUDART(expr)                                          \
  do {                                                                   \
    const cudaError_t phi_e_ = (expr);                                   \
    ASSERT_EQ(phi_e_, cudaSuccess) << #expr << ": " << cudaGetErrorName(phi_e_); \
  } while (0)

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) p_ = nullptr;
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void Upload(const std::vector<T>& v) {
    cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  std::vector<T> Download() const {
    std::vector<T> v(n_);
    cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
  // Poisons the buffer (0xFF bytes: NaN in BF16 and F32) so unwritten outputs show.
  void Poison() { cudaMemset(p_, 0xFF, n_ * sizeof(T)); }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// Seeded uniform(-scale, scale) values already rounded to BF16, as both sides see them.
inline std::vector<float> RandomBf16Values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_round_cpu(d(rng));
  return v;
}

inline std::vector<bf16> ToBf16(const std::vector<float>& v) {
  std::vector<bf16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
  return o;
}

inline std::vector<float> ToF32(const std::vector<bf16>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __bfloat162float(v[i]);
  return o;
}

// ||got - want|| / ||want||; NaN anywhere in `got` gives infinity.
inline double RelNormError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) return INFINITY;
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Tolerances by output type: F32 results of BF16 inputs differ only by
// accumulation order; BF16 outputs add one rounding of 2^-9 relative.
inline constexpr double kTolF32 = 2e-4;
inline constexpr double kTolBf16 = 1e-2;

}  // namespace phi::worker::cuda::testing

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_GPU_TEST_UTIL_H_
