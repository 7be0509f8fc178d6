// The emulator's own tests: warp collectives, barriers, static shared memory, mma.sync's
// fragment layouts, the launch checks and failure reports, graphs and memory. Kernels here are
// written as in a .cu file and compiled the way the backend's are (instrument_kernel_source.py
// puts the device built-ins of cuda_emu_device.h first) and launched through the emulator.
#include "tests/cuda_emu/cuda_emu_device.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace {

__global__ void WarpOpsKernel(int* out) {
  const int t = threadIdx.x, lane = t & 31;
  int* o = out + t * 8;
  o[0] = __shfl_xor_sync(0xffffffffu, t, 1);
  o[1] = __shfl_up_sync(0xffffffffu, t, 1);
  o[2] = __shfl_down_sync(0xffffffffu, t, 2);
  o[3] = __shfl_sync(0xffffffffu, t, 5);
  o[4] = __shfl_xor_sync(0xffffffffu, t, 4, 8);
  o[5] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[6] = static_cast<int>(__match_any_sync(0xffffffffu, lane / 4));
  o[7] = __shfl_down_sync(0xffffffffu, t, 3, 8);
}

TEST(CudaEmu, WarpCollectivesFollowTheCudaSemantics) {
  std::vector<int> out(64 * 8, -1);
  ASSERT_EQ(cuda_emu::Launch(dim3(1), dim3(64), 0, nullptr, [&] { WarpOpsKernel(out.data()); }),
            cudaSuccess);
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
  for (int t = 0; t < 64; ++t) {
    const int lane = t & 31, warp0 = t - lane;
    const int* o = &out[t * 8];
    EXPECT_EQ(o[0], t ^ 1) << t;
    EXPECT_EQ(o[1], lane >= 1 ? t - 1 : t) << t;  // below the warp: own value
    EXPECT_EQ(o[2], lane + 2 < 32 ? t + 2 : t) << t;
    EXPECT_EQ(o[3], warp0 + 5) << t;
    EXPECT_EQ(o[4], t ^ 4) << t;  // within segments of 8
    EXPECT_EQ(static_cast<unsigned>(o[5]), ballot) << t;
    EXPECT_EQ(static_cast<unsigned>(o[6]), 0xfu << (lane / 4 * 4)) << t;
    EXPECT_EQ(o[7], lane % 8 + 3 < 8 ? t + 3 : t) << t;
  }
}

__global__ void NeighbourKernel(int* out, bool sync) {
  __shared__ int s[128];
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = t + 1000 * blockIdx.x;
  if (sync) __syncthreads();
  out[blockIdx.x * n + t] = s[(t + 1) % n];
}

TEST(CudaEmu, SyncThreadsOrdersSharedMemoryAndAMissingOneShows) {
  std::vector<int> out(3 * 128);
  ASSERT_EQ(cuda_emu::Launch(dim3(3), dim3(128), 0, nullptr,
                             [&] { NeighbourKernel(out.data(), true); }),
            cudaSuccess);
  for (int b = 0; b < 3; ++b) {
    for (int t = 0; t < 128; ++t) EXPECT_EQ(out[b * 128 + t], (t + 1) % 128 + 1000 * b);
  }
  // Without the barrier, threads read their neighbour's slot before the neighbour ran.
  ASSERT_EQ(cuda_emu::Launch(dim3(3), dim3(128), 0, nullptr,
                             [&] { NeighbourKernel(out.data(), false); }),
            cudaSuccess);
  int stale = 0;
  for (int b = 0; b < 3; ++b) {
    for (int t = 0; t < 128; ++t) stale += out[b * 128 + t] != (t + 1) % 128 + 1000 * b;
  }
  EXPECT_GT(stale, 100);
}

// Reads its slot before writing it (a bug the emulator must show), then writes it.
__global__ void ReadBeforeWriteKernel(int* out) {
  __shared__ int s[64];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];
  s[threadIdx.x] = 1 + threadIdx.x;
}

// Static shared memory is thread_local in the emulator; every block must still find it
// poisoned, not holding the block before's values (the GPU gives no such values either).
TEST(CudaEmu, StaticSharedMemoryIsPoisonedForEveryBlock) {
  std::vector<int> out(3 * 64, 0);
  ASSERT_EQ(cuda_emu::Launch(dim3(3), dim3(64), 0, nullptr,
                             [&] { ReadBeforeWriteKernel(out.data()); }),
            cudaSuccess);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 0x55555555) << i;
}

__global__ void StaticSharedKernel() {
  __shared__ float s[8 * 1024];  // 32 KB
  s[threadIdx.x] = 0.0f;
}

// Static and dynamic shared memory together must fit the device's opt-in limit (227 KB).
TEST(CudaEmu, StaticPlusDynamicSharedMemoryMustFitTheDevice) {
  const void* id = reinterpret_cast<const void*>(&StaticSharedKernel);
  const size_t fits = cuda_emu::kMaxDynamicSharedOptIn - 32 * 1024;
  ASSERT_EQ(cudaFuncSetAttribute(id, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(fits + 1)),
            cudaSuccess);
  const auto launch = [&](size_t dynamic) {
    return cuda_emu::Launch(dim3(1), dim3(32), dynamic, nullptr, [] { StaticSharedKernel(); }, id);
  };
  EXPECT_EQ(launch(fits), cudaSuccess);
  EXPECT_DEATH((void)launch(fits + 1), "32768 bytes of static and 199681 of dynamic shared memory");
}

__global__ void __launch_bounds__(64) BoundedKernel() {}

TEST(CudaEmu, BlocksAboveTheKernelsLaunchBoundsFail) {
  const auto launch = [](unsigned threads) {
    return cuda_emu::Launch(dim3(2), dim3(threads), 0, nullptr, [] { BoundedKernel(); });
  };
  EXPECT_EQ(launch(64), cudaSuccess);
  EXPECT_DEATH((void)launch(65), "a block of 65 threads launched for a kernel whose .* allows 64");
}

uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  std::memcpy(&r, &v, 4);
  return r;
}

// The m16n8k16 fragments of the PTX ISA (g = lane / 4, t = lane % 4), built independently of
// the emulator's unpacking: A row-major 16 x 16, B 16 x 8 (k x n), C and D 16 x 8.
__global__ void MmaKernel(const float* A, const float* B, const float* C, float* D) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  const uint32_t a[4] = {PackBf16(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]),
                         PackBf16(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                         PackBf16(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                         PackBf16(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
  const uint32_t b0 = PackBf16(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
  const uint32_t b1 = PackBf16(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
  float d[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t],
                C[(g + 8) * 8 + 2 * t + 1]};
  cuda_emu::WarpMmaBf16M16N8K16(d, a, b0, b1);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

TEST(CudaEmu, MmaM16N8K16IsTheMatrixProductInThePtxLayouts) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto bf = [](float x) { return __bfloat162float(__float2bfloat16(x)); };
  std::vector<float> A(256), B(128), C(128), D(128, 0.0f);
  for (float& x : A) x = bf(u(rng));
  for (float& x : B) x = bf(u(rng));
  for (float& x : C) x = u(rng);
  ASSERT_EQ(cuda_emu::Launch(dim3(1), dim3(32), 0, nullptr,
                             [&] { MmaKernel(A.data(), B.data(), C.data(), D.data()); }),
            cudaSuccess);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      double ref = C[i * 8 + j];
      for (int k = 0; k < 16; ++k) ref += static_cast<double>(A[i * 16 + k]) * B[k * 8 + j];
      EXPECT_NEAR(D[i * 8 + j], ref, 1e-5) << i << "," << j;
    }
  }
}

__global__ void ExitedLaneKernel(int* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

TEST(CudaEmuDeathTest, ReportsCollectivesThatCannotComplete) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<int> out(64);
  EXPECT_DEATH((void)cuda_emu::Launch(dim3(1), dim3(32), 0, nullptr,
                                      [&] { ExitedLaneKernel(out.data()); }),
               "thread 3 exited but is named in the mask of a warp collective");
}

__global__ void HalfWarpSyncKernel() {
  if ((threadIdx.x & 31) < 16) __shfl_xor_sync(0xffffffffu, 1, 1);
  __syncthreads();
}

TEST(CudaEmuDeathTest, ReportsADeadlockNamingTheWaitingThreads) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((void)cuda_emu::Launch(dim3(1), dim3(32), 0, nullptr, [] { HalfWarpSyncKernel(); }),
               "deadlock, threads waiting where others never arrive: 0:warp");
}

__global__ void NothingKernel() {}

TEST(CudaEmu, LaunchesAreCheckedLikeTheDriverChecksThem) {
  const auto launch = [](dim3 grid, dim3 block, size_t shared) {
    return cuda_emu::Launch(grid, block, shared, nullptr, [] { NothingKernel(); });
  };
  EXPECT_EQ(launch(dim3(1), dim3(1024), 0), cudaSuccess);
  EXPECT_EQ(launch(dim3(1), dim3(1025), 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once
  EXPECT_EQ(launch(dim3(0), dim3(32), 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(launch(dim3(1, 65536), dim3(32), 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(launch(dim3(1), dim3(32), 48 * 1024), cudaSuccess);
  EXPECT_EQ(launch(dim3(1), dim3(32), 48 * 1024 + 1), cudaErrorInvalidConfiguration);
  (void)cudaGetLastError();
}

__global__ void BigSharedKernel() {}

// Above 48 KB of dynamic shared memory a kernel launches only after opting in to as much
// (cudaFuncAttributeMaxDynamicSharedMemorySize), up to the device's opt-in limit.
TEST(CudaEmu, DynamicSharedMemoryAbove48KbNeedsTheKernelsOptIn) {
  const void* id = reinterpret_cast<const void*>(&BigSharedKernel);
  const auto launch = [&](size_t shared) {
    return cuda_emu::Launch(dim3(1), dim3(32), shared, nullptr, [] { BigSharedKernel(); }, id);
  };
  EXPECT_EQ(launch(100 * 1024), cudaErrorInvalidConfiguration);
  (void)cudaGetLastError();
  int optin = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(id, cudaFuncAttributeMaxDynamicSharedMemorySize, optin + 1),
            cudaErrorInvalidValue);
  (void)cudaGetLastError();
  ASSERT_EQ(cudaFuncSetAttribute(id, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024),
            cudaSuccess);
  EXPECT_EQ(launch(100 * 1024), cudaSuccess);
  EXPECT_EQ(launch(100 * 1024 + 1), cudaErrorInvalidConfiguration);
  (void)cudaGetLastError();
  // Another kernel has not opted in.
  EXPECT_EQ(cuda_emu::Launch(dim3(1), dim3(32), 100 * 1024, nullptr, [] { NothingKernel(); },
                             reinterpret_cast<const void*>(&NothingKernel)),
            cudaErrorInvalidConfiguration);
  (void)cudaGetLastError();
}

__global__ void AddKernel(int* x, int v) {
  if (threadIdx.x == 0 && blockIdx.x == 0) *x += v;
}

TEST(CudaEmu, GraphsReplayWhatTheStreamRecorded) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  int x = 1, y = 0;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cuda_emu::Launch(dim3(2), dim3(32), 0, s, [&] { AddKernel(&x, 10); }), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(&y, &x, sizeof(int), cudaMemcpyDeviceToDevice, s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  (void)cudaGetLastError();
  EXPECT_EQ(x, 1);  // recorded, not run
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(x, 21);
  EXPECT_EQ(y, 21);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

TEST(CudaEmu, DeviceMemoryIsCountedAndNeverZeroed) {
  size_t free0 = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
  EXPECT_GT(total, 0u);
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 1 << 20), cudaSuccess);
  size_t free1 = 0;
  ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
  EXPECT_EQ(free0 - free1, size_t{1} << 20);
  EXPECT_EQ(static_cast<unsigned char*>(p)[12345], 0x55);
  void* too_big = nullptr;
  EXPECT_EQ(cudaMalloc(&too_big, free1 + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(too_big, nullptr);
  (void)cudaGetLastError();
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
  EXPECT_EQ(free1, free0);
}

}  // namespace
