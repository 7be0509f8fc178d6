// The CUDA runtime API calls the backend and its tests make, over host memory: allocations
// counted against an emulated device memory (CUDA_EMU_MEMORY_MB, default 1024, so that
// "does not fit" paths run), copies and sets in stream order, graphs as recorded lists of
// stream operations, events as host clock readings. Executables of the emulated build link
// this instead of libcudart.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tests/cuda_emu/cuda_emu.h"
#include "tests/cuda_emu/cuda_emu_internal.h"

struct CUstream_st {
  bool capturing = false;
  std::vector<std::function<void()>> captured;
};
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
};

namespace cuda_emu {
namespace {

thread_local cudaError_t t_last_error = cudaSuccess;

struct Memory {
  std::mutex mu;
  std::map<void*, size_t> device;  // live device allocations
  size_t used = 0;
  size_t capacity = [] {
    const char* v = std::getenv("CUDA_EMU_MEMORY_MB");
    const long mb = v ? std::atol(v) : 0;
    return static_cast<size_t>(mb > 0 ? mb : 1024) << 20;
  }();
};
Memory& Mem() {
  static Memory* m = new Memory;
  return *m;
}

// Fresh allocations hold a finite non-zero pattern (BF16 and F32 read it as ~1.5e13), as
// cudaMalloc promises nothing about contents: a kernel that reads what nobody wrote gets
// large wrong numbers instead of convenient zeros.
constexpr size_t kPoisonLimit = 64u << 20;

}  // namespace

cudaError_t RecordError(cudaError_t error) {
  if (error != cudaSuccess) t_last_error = error;
  return error;
}

cudaError_t Enqueue(cudaStream_t stream, std::function<void()> op) {
  if (stream != nullptr && stream->capturing) {
    stream->captured.push_back(std::move(op));
  } else {
    op();
  }
  return cudaSuccess;
}

}  // namespace cuda_emu

using cuda_emu::Enqueue;
using cuda_emu::RecordError;

extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = cuda_emu::t_last_error;
  cuda_emu::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return cuda_emu::t_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t error) { return cudaGetErrorName(error); }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : RecordError(cudaErrorInvalidDevice);
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return RecordError(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = cuda_emu::MultiprocessorCount(); return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(cuda_emu::kMaxDynamicSharedOptIn);
      return cudaSuccess;
    default: return RecordError(cudaErrorInvalidValue);
  }
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (func == nullptr) return RecordError(cudaErrorInvalidDeviceFunction);
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) {
    return RecordError(cudaErrorInvalidValue);  // not emulated
  }
  if (value < 0 || static_cast<size_t>(value) > cuda_emu::kMaxDynamicSharedOptIn) {
    return RecordError(cudaErrorInvalidValue);
  }
  cuda_emu::SetKernelDynamicSharedLimit(func, static_cast<size_t>(value));
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void*, int threads,
                                                          size_t shared_bytes) {
  if (threads <= 0 || threads > 1024) return RecordError(cudaErrorInvalidValue);
  // An SM of the H100 / H200: 2048 threads, 32 blocks, 228 KB of shared memory with 1 KB
  // reserved per block (registers are not modelled).
  const int by_threads = 2048 / threads;
  const int by_shared = static_cast<int>(233472 / (shared_bytes + 1024));
  *blocks = std::min({by_threads, by_shared, 32});
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaMalloc(void** ptr, size_t size) {
  cuda_emu::Memory& m = cuda_emu::Mem();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (size > m.capacity - m.used) {
      *ptr = nullptr;
      return RecordError(cudaErrorMemoryAllocation);
    }
    m.used += size;
  }
  // Exactly `size` bytes (256-aligned like cudaMalloc): under AddressSanitizer a kernel that
  // reads or writes past the end of a buffer is reported at the access.
  void* p = nullptr;
  if (posix_memalign(&p, 256, size > 0 ? size : 1) != 0) {
    std::lock_guard<std::mutex> lock(m.mu);
    m.used -= size;
    return RecordError(cudaErrorMemoryAllocation);
  }
  std::memset(p, cuda_emu::kPoisonByte, size < cuda_emu::kPoisonLimit ? size : cuda_emu::kPoisonLimit);
  std::lock_guard<std::mutex> lock(m.mu);
  m.device[p] = size;
  *ptr = p;
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  cuda_emu::Memory& m = cuda_emu::Mem();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    auto it = m.device.find(ptr);
    if (it == m.device.end()) return RecordError(cudaErrorInvalidValue);
    m.used -= it->second;
    m.device.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  *ptr = nullptr;
  return posix_memalign(ptr, 256, size > 0 ? size : 1) == 0 ? cudaSuccess
                                                             : RecordError(cudaErrorMemoryAllocation);
}
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) {
  return cudaMallocHost(ptr, size);
}
cudaError_t cudaFreeHost(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  cuda_emu::Memory& m = cuda_emu::Mem();
  std::lock_guard<std::mutex> lock(m.mu);
  *free_bytes = m.capacity - m.used;
  *total_bytes = m.capacity;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind) {
  if (count) std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind,
                            cudaStream_t stream) {
  return Enqueue(stream, [=] {
    if (count) std::memmove(dst, src, count);
  });
}
static void Copy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                   size_t height) {
  for (size_t r = 0; r < height; ++r) {
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch,
                 width);
  }
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind) {
  if (width > dpitch || width > spitch) return RecordError(cudaErrorInvalidValue);
  Copy2D(dst, dpitch, src, spitch, width, height);
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind, cudaStream_t stream) {
  if (width > dpitch || width > spitch) return RecordError(cudaErrorInvalidValue);
  return Enqueue(stream, [=] { Copy2D(dst, dpitch, src, spitch, width, height); });
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  return Enqueue(stream, [=] { std::memset(ptr, value, count); });
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  return cudaStreamCreate(stream);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (stream != nullptr && stream->capturing) {
    return RecordError(cudaErrorStreamCaptureUnsupported);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (stream == nullptr || stream->capturing) {
    return RecordError(cudaErrorStreamCaptureUnsupported);
  }
  stream->capturing = true;
  stream->captured.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (stream == nullptr || !stream->capturing) return RecordError(cudaErrorInvalidValue);
  stream->capturing = false;
  *graph = new CUgraph_st{std::move(stream->captured)};
  stream->captured.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  *status = stream != nullptr && stream->capturing ? cudaStreamCaptureStatusActive
                                                   : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  return Enqueue(stream, [exec] {
    for (const auto& op : exec->ops) op();
  });
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  return cudaEventCreate(event);
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  return Enqueue(stream, [event] { event->at = std::chrono::steady_clock::now(); });
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

}  // extern "C"
