// The two decode GEMV kernels behind gemv1_forward (kernels.h). gemv.cu checks the arguments
// and picks one by the number of tokens; these launch with the arguments already checked.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMV_LAUNCH_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMV_LAUNCH_H_

#include <cstddef>
#include <cstdint>

#include "services/worker/backends/cuda/kernels.h"

namespace phi::worker::cuda {

// One token (gemv_decode.cu): a weight row per warp slice.
CudaStatus launch_gemv1_rows(const Gemv1Args& g, cudaStream_t stream);
int gemv1_rows_default_split(int n, int k);

// 2..kGemvMaxM tokens (gemv_mma.cu): 16-row weight tiles on tensor cores.
CudaStatus launch_gemv1_tiles(const Gemv1Args& g, cudaStream_t stream);
int gemv1_tiles_default_split(int n, int k);
// Dynamic shared memory of one block: the m activation rows, padded.
size_t gemv1_tiles_shared_bytes(int m, int k);

// Blocks for a persistent GEMV grid: as many as the GPU holds at once (blocks_per_sm > 0
// caps the blocks per SM), each taking an equal share of `groups` (so no last round runs on a
// few blocks), and at least groups / max_held blocks when a block holds at most max_held
// groups' sums at once (0: no limit).
int64_t gemv_persistent_grid(const void* kernel, int threads, size_t shared_bytes,
                             int blocks_per_sm, int groups, int max_held);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMV_LAUNCH_H_
