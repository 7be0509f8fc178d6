// A small cuBLASLt wrapper for the model's GEMMs: D[M,N] = A[M,K] * W[N,K]^T + bias[N]
// (+ beta * D), BF16 operands, F32 accumulation, D in BF16 or F32, bias fused as an epilogue
// (with a bias-add kernel as the fallback where cuBLASLt offers no such algorithm). Matmul
// descriptors and the chosen algorithm are cached per shape, so a step issues no heuristic
// queries after warm-up and can be captured in a CUDA graph.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMM_LT_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMM_LT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "services/worker/backends/cuda/kernels.h"

namespace phi::worker::cuda {

struct CublasLtApi;

class GemmLt {
 public:
  // workspace_bytes: cuBLASLt scratch (32 MiB is plenty on Hopper).
  static CudaStatus Create(size_t workspace_bytes, std::unique_ptr<GemmLt>* out);
  ~GemmLt();
  GemmLt(const GemmLt&) = delete;
  GemmLt& operator=(const GemmLt&) = delete;

  // `bias` has N elements of D's type (BF16 when d_f32 is false, F32 otherwise) or is null.
  // beta != 0 accumulates into D (the residual add of the parallel block).
  CudaStatus Matmul(const bf16* a, const bf16* w, const void* bias, void* d, bool d_f32,
                    float beta, int m, int n, int k, cudaStream_t stream);

  // M <= small_m_max goes to gemv_forward, larger M to cuBLASLt (0: cuBLASLt for all M).
  // Default 1: the one-token GEMV beats cuBLASLt at M = 1; M >= 2 runs on tensor cores
  // (gemv_mma.cu), measured against cuBLASLt in bench/results/cuda_backend.md.
  void set_small_m_max(int m) { small_m_max_ = m < kGemvMaxM ? m : kGemvMaxM; }

  // True once some shape needed the bias-add fallback (reported by the benchmark).
  bool used_bias_fallback() const { return used_bias_fallback_; }

 private:
  // Whether Matmul runs this shape as gemv_forward (shared with the CPU emulator's GemmLt,
  // tests/cuda_emu/gemm_lt_emu.cc, so that both dispatch alike).
  bool TakesGemv(const bf16* a, const bf16* w, int m, int k) const {
    return m <= small_m_max_ && decode_gemv_fits(m, k) &&
           (reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w)) % 16 == 0;
  }

  struct Plan;
  GemmLt() = default;
  CudaStatus GetPlan(int m, int n, int k, bool d_f32, bool has_bias, Plan** plan);

  const CublasLtApi* lt_ = nullptr;  // dlopen-ed on first Create (cublaslt_loader.h says why)
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool used_bias_fallback_ = false;
  int small_m_max_ = 1;
  std::map<std::tuple<int, int, int, bool, bool>, std::unique_ptr<Plan>> plans_;
};

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_GEMM_LT_H_
