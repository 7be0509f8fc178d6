// CUDA emulation on the CPU: the interface between the emulated device built-ins
// (cuda_emu_device.h, force-included into the .cu files compiled as C++) and the runtime
// (cuda_emu_runtime.cc, which also implements the CUDA runtime API the backend calls).
//
// Why: the CUDA backend's kernels must be right before a GPU is lent, and CI has none. The
// emulator runs the kernels' own source (a copy that instrument_kernel_source.py makes line
// for line, adding only checks), unchanged but for the few inline-PTX sites, on the host: each block's threads are fibers scheduled cooperatively on one OS thread, switching
// only at __syncthreads and warp collectives (shuffles, ballot, match, mma.sync), so the
// whole of the GPU tests (kernels against their CPU twins, the model against the CPU
// backend, the oracle suite) runs in CI. Device memory is host memory of exactly the size
// asked, and the emulator and its tests are built with AddressSanitizer and UBSan
// (PHI_CUDA_EMU_SANITIZE), so an out-of-bounds or misaligned kernel access stops the test at
// its source line; launches are checked like the driver checks them (block and grid limits,
// dynamic shared memory, each kernel's __launch_bounds__), shared memory, static or dynamic,
// starts every block filled with 0x55 (never zero, never the block before's values), and a
// warp collective that a named lane never reaches, or a barrier nobody can pass, is reported
// as a deadlock instead of hanging. Threads of a block run one
// warp at a time as far as the barriers allow, so a missing __syncthreads reads stale data.
//
// What it does not model: timing, concurrency between blocks or kernels (blocks run one
// after another; a PDL launch behaves as a plain one), memory-model races beyond the fiber
// order (CUDA_EMU_ORDER=reverse runs each block's threads in the opposite order, which
// exposes a missing __syncthreads in one direction or the other), and the numerics of
// approximate intrinsics (__expf is expf).
#ifndef PHI_TESTS_CUDA_EMU_CUDA_EMU_H_
#define PHI_TESTS_CUDA_EMU_CUDA_EMU_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace cuda_emu {

// The built-in variables of the thread being run.
struct ThreadIndex {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
const ThreadIndex& Current();

// __syncthreads(): returns once every thread of the block that has not exited arrived.
void SyncThreads();

// Warp collectives: every lane named in `mask` must call the same one (else the emulator
// aborts naming the lanes). Values travel as their raw bits (up to 8 bytes).
enum class ShuffleKind { kIndex, kUp, kDown, kXor };
uint64_t WarpShuffle(ShuffleKind kind, unsigned mask, uint64_t bits, int operand, int width);
unsigned WarpBallot(unsigned mask, bool predicate);
unsigned WarpMatchAny(unsigned mask, uint64_t bits);
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with D = C (d in, d out), the PTX ISA's
// fragment layouts.
void WarpMmaBf16M16N8K16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);

// The block's dynamic shared memory (extern __shared__), as large as the launch asked.
unsigned char* DynamicShared();

// Static `__shared__` variables are `thread_local` here, so a block would find what the block
// before it left. The emulated build's copy of each kernel source (instrument_kernel_source.py)
// calls this after each declaration: the first thread of a block to pass it fills the variable
// with 0x55, as dynamic shared memory is, so a read before the block wrote it shows.
void PoisonStaticShared(void* variable, size_t bytes);
// Called at the top of a `__launch_bounds__(max_threads, ...)` kernel's body (same script):
// fails a block larger than max_threads, which the driver refuses to launch.
void CheckLaunchBounds(long long max_threads);

// Runs body() once per thread of each block of the grid, in stream order (recorded instead
// when the stream is being captured into a graph). Checks the launch like the driver: more
// than 48 KB of dynamic shared memory only for a `kernel` that opted in to as much
// (cudaFuncSetAttribute with cudaFuncAttributeMaxDynamicSharedMemorySize).
cudaError_t Launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, cudaStream_t stream,
                   std::function<void()> body, const void* kernel = nullptr);

// The opt-in limit of dynamic shared memory per block (an H100 / H200's 227 KB).
inline constexpr size_t kMaxDynamicSharedOptIn = 232448;
// The dynamic shared memory `kernel` may launch with (48 KB unless it opted in to more).
size_t KernelDynamicSharedLimit(const void* kernel);
void SetKernelDynamicSharedLimit(const void* kernel, size_t bytes);

// A stream-ordered host operation (memcpy, memset, an emulated GEMM): runs now, or is
// recorded when `stream` is being captured.
cudaError_t Enqueue(cudaStream_t stream, std::function<void()> op);

// The emulated device's multiprocessor count (CUDA_EMU_SMS, default 4).
int MultiprocessorCount();

}  // namespace cuda_emu

#endif  // PHI_TESTS_CUDA_EMU_CUDA_EMU_H_
