// What the current GPU holds at once, for launchers that size their grids to it (cached:
// the queries are not free and launchers ask at every launch outside CUDA graphs).
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_DEVICE_LIMITS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_DEVICE_LIMITS_H_

#include <cstddef>

#include "services/worker/backends/cuda/cuda_status.h"

namespace phi::worker::cuda {

// Streaming multiprocessors of the current device; 0 when the runtime cannot say.
int current_sm_count();

// Blocks of `kernel` (a __global__ function) with `threads` threads and `shared_bytes` of
// dynamic shared memory resident on one SM at once; 0 when the runtime cannot say.
int resident_blocks_per_sm(const void* kernel, int threads, size_t shared_bytes);

// Dynamic shared memory one block may have on the current device with the opt-in
// (cudaDevAttrMaxSharedMemoryPerBlockOptin; 48 KB when the runtime cannot say).
size_t max_dynamic_shared_per_block();

// Lets `kernel` launch with `bytes` of dynamic shared memory: above 48 KB a kernel must opt in
// (cudaFuncAttributeMaxDynamicSharedMemorySize), once per device. Not a stream operation, so
// it may run while a stream is being captured into a graph.
CudaStatus allow_dynamic_shared(const void* kernel, size_t bytes);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_DEVICE_LIMITS_H_
