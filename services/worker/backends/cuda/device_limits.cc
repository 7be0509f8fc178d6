#include "services/worker/backends/cuda/device_limits.h"

#include <cuda_runtime.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

namespace phi::worker::cuda {

int current_sm_count() {
  static std::atomic<int> cached[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) {
    cudaGetLastError();  // not a launch error: callers fall back to a default
    return 0;
  }
  if (dev < 64) {
    const int c = cached[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  if (dev < 64) cached[dev].store(sms, std::memory_order_relaxed);
  return sms;
}

int resident_blocks_per_sm(const void* kernel, int threads, size_t shared_bytes) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t>, int> cache;
  const auto key = std::make_tuple(kernel, threads, shared_bytes);
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, shared_bytes) !=
      cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  std::lock_guard<std::mutex> lock(mu);
  cache[key] = blocks;
  return blocks;
}

namespace {
constexpr size_t kDefaultDynamicShared = 48 * 1024;

int current_device() {
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return dev;
}
}  // namespace

size_t max_dynamic_shared_per_block() {
  static std::atomic<int> cached[64];
  const int dev = current_device();
  if (dev < 0) return kDefaultDynamicShared;
  if (dev < 64) {
    const int c = cached[dev].load(std::memory_order_relaxed);
    if (c > 0) return static_cast<size_t>(c);
  }
  int bytes = 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
          cudaSuccess ||
      bytes <= 0) {
    cudaGetLastError();
    return kDefaultDynamicShared;
  }
  if (dev < 64) cached[dev].store(bytes, std::memory_order_relaxed);
  return static_cast<size_t>(bytes);
}

CudaStatus allow_dynamic_shared(const void* kernel, size_t bytes) {
  if (bytes <= kDefaultDynamicShared) return {};
  static std::mutex mu;
  static std::set<std::pair<int, const void*>> done;  // (device, kernel) opted in to the maximum
  const auto key = std::make_pair(current_device(), kernel);
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(key) > 0) return {};
  const size_t max = max_dynamic_shared_per_block();
  PHI_CUDA_REQUIRE(bytes <= max, "a kernel needs " + std::to_string(bytes) +
                                     " bytes of shared memory; the GPU allows " +
                                     std::to_string(max) + " per block");
  PHI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(max)));
  done.insert(key);
  return {};
}

}  // namespace phi::worker::cuda
