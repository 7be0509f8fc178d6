// What the benchmark reads of PhiCudaModel's insides and the serving path never needs: the
// decode graph a batch replays (timed alone against the whole step) and whether cuBLASLt
// fell back from its bias epilogue. A friend of the model, so the model class keeps no
// accessors for them.
#ifndef PHI_BENCH_CUDA_MODEL_ACCESS_H_
#define PHI_BENCH_CUDA_MODEL_ACCESS_H_

#include <cuda_runtime.h>

#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace phi::bench {

struct PhiCudaModelAccess {
  // The decode graph a batch of `batch` sequences replays (its bucket's), null before the
  // bucket's first decode step. Replaying it recomputes the last such step in place.
  static cudaGraphExec_t DecodeGraph(const worker::cuda::PhiCudaModel& m, int batch) {
    const auto it = m.graphs_.find(worker::cuda::decode_graph_bucket(batch));
    return it == m.graphs_.end() ? nullptr : it->second;
  }
  static bool UsedGemmBiasFallback(const worker::cuda::PhiCudaModel& m) {
    return m.gemm_->used_bias_fallback();
  }
};

}  // namespace phi::bench

#endif  // PHI_BENCH_CUDA_MODEL_ACCESS_H_
