// The two decode GEMV kernels behind decode_gemv_forward (kernels.h). gemv.cu checks the arguments
// and picks one by the number of tokens; these launch with the arguments already checked.
// Included by the .cu files only (pick_gemv_kernel needs activations.cuh).
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMV_LAUNCH_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMV_LAUNCH_H_

#include <cstddef>
#include <cstdint>

#include "services/worker/backends/cuda/activations.cuh"
#include "services/worker/backends/cuda/kernels.h"

namespace phi::worker::cuda {

// One token (gemv_decode.cu): a weight row per warp slice.
CudaStatus launch_decode_gemv_rows(const DecodeGemvArgs& g, cudaStream_t stream);
int decode_gemv_rows_default_split(int n, int k);

// 2..kGemvMaxM tokens (gemv_mma.cu): 16-row weight tiles on tensor cores.
CudaStatus launch_decode_gemv_tiles(const DecodeGemvArgs& g, cudaStream_t stream);
int decode_gemv_tiles_default_split(int n, int k);
// Dynamic shared memory of one block: the m activation rows, padded.
size_t decode_gemv_tiles_shared_bytes(int m, int k);

// Blocks for a persistent GEMV grid: as many as the GPU holds at once (blocks_per_sm > 0
// caps the blocks per SM), each taking an equal share of `groups` (so no last round runs on a
// few blocks), and at least groups / max_held blocks when a block holds at most max_held
// groups' sums at once (0: no limit).
int64_t gemv_persistent_grid(const void* kernel, int threads, size_t shared_bytes,
                             int blocks_per_sm, int groups, int max_held);

// The instantiation Kernels<P, VPT, kF32>::kFn of a decode GEMV kernel template for g's
// prologue, LayerNorm width (layernorm_reg_vpt) and output type; both kernels take the same
// set, so they pick alike.
template <template <GemvPrologue, int, bool> class Kernels>
auto pick_gemv_kernel(const DecodeGemvArgs& g) {
  auto out = [&](auto f32, auto bf) { return g.d_f32 ? f32 : bf; };
  switch (g.prologue) {
    case GemvPrologue::kLayerNorm:
      switch (layernorm_reg_vpt(g.k)) {
        case 1:
          return out(Kernels<GemvPrologue::kLayerNorm, 1, true>::kFn,
                     Kernels<GemvPrologue::kLayerNorm, 1, false>::kFn);
        case 2:
          return out(Kernels<GemvPrologue::kLayerNorm, 2, true>::kFn,
                     Kernels<GemvPrologue::kLayerNorm, 2, false>::kFn);
        case 4:
          return out(Kernels<GemvPrologue::kLayerNorm, 4, true>::kFn,
                     Kernels<GemvPrologue::kLayerNorm, 4, false>::kFn);
        default:
          return out(Kernels<GemvPrologue::kLayerNorm, 8, true>::kFn,
                     Kernels<GemvPrologue::kLayerNorm, 8, false>::kFn);
      }
    case GemvPrologue::kGeluConcat:
      return out(Kernels<GemvPrologue::kGeluConcat, 1, true>::kFn,
                 Kernels<GemvPrologue::kGeluConcat, 1, false>::kFn);
    default:
      return out(Kernels<GemvPrologue::kPlain, 1, true>::kFn,
                 Kernels<GemvPrologue::kPlain, 1, false>::kFn);
  }
}

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMV_LAUNCH_H_
