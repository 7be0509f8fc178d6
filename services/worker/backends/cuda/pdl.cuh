// Programmatic dependent launch (Hopper, sm_90+). A kernel launched with
// launch_kernel(pdl = true, ...) may start while the kernel before it on the stream is still
// running; it must call pdl_wait() before it reads anything that kernel writes, and before
// it writes anything. Work that depends on nothing upstream (issuing the
// first weight loads of a GEMV) goes before pdl_wait(), so it overlaps the previous kernel's
// tail and the launch latency between them, which at batch-1 decode is a large share of each
// of the ~100 small kernels of a step. The rule "wait before any dependent access" makes the
// chain safe transitively: a kernel's pdl_wait() returns only when the kernel before it has
// completed, and that one waited for its own predecessor the same way.
// Every kernel calls pdl_launch_dependents() only after its pdl_wait(). Then a kernel starts
// only once the kernel two launches back has completed (its predecessor triggered after
// waiting for it), so outputs of kernels two or more launches back may be read before
// pdl_wait(): the fused W2 GEMV streams the fc1 columns (from the W1 GEMV before attention)
// that way while attention runs. Read
// them through L2 (__ldcg), where completed grids' writes are, not L1.
// On older GPUs, and for kernels launched without the attribute, both calls are no-ops.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_PDL_CUH_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_PDL_CUH_

#include <cuda_runtime.h>

#ifdef PHI_CUDA_EMULATION
#include "tests/cuda_emu/cuda_emu.h"
#endif

namespace phi::worker::cuda {

// Blocks until the previous kernel on the stream has completed and its writes are visible.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel on the stream be scheduled (it still waits for this one in its own
// pdl_wait()). Called right after pdl_wait(): the next kernel's blocks then take SM slots as
// soon as this kernel's blocks leave them.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// Launches `kernel` on `stream`, as a programmatic dependent of the previous kernel when
// `pdl` is set (the attribute is kept when the launch is captured into a CUDA graph).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block,
                          size_t shared_bytes, cudaStream_t stream, Args... args) {
#ifdef PHI_CUDA_EMULATION
  // The CPU emulator (tests/cuda_emu) runs kernels one after another: PDL changes nothing.
  (void)pdl;
  return cuda_emu::Launch(grid, block, shared_bytes, stream,
                          [=] { kernel(static_cast<Params>(args)...); },
                          reinterpret_cast<const void*>(kernel));
#else
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
#endif
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_PDL_CUH_
