#include "services/worker/backends/cuda/gemm_lt.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "services/worker/backends/cuda/cublaslt_loader.h"

namespace phi::worker::cuda {

struct GemmLt::Plan {
  const CublasLtApi* lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, a_layout = nullptr, d_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool fused_bias = false;  // false with a bias: run bias_add_forward after the GEMM
  ~Plan() {
    if (desc) lt->cublasLtMatmulDescDestroy(desc);
    if (w_layout) lt->cublasLtMatrixLayoutDestroy(w_layout);
    if (a_layout) lt->cublasLtMatrixLayoutDestroy(a_layout);
    if (d_layout) lt->cublasLtMatrixLayoutDestroy(d_layout);
  }
};

CudaStatus GemmLt::Create(size_t workspace_bytes, std::unique_ptr<GemmLt>* out) {
  std::unique_ptr<GemmLt> g(new GemmLt());
  PHI_CUDA_RETURN_IF_ERROR(LoadCublasLt(&g->lt_));
  cublasLtHandle_t h;
  PHI_CUBLAS_CHECK(g->lt_->cublasLtCreate(&h));
  g->handle_ = h;
  g->workspace_bytes_ = workspace_bytes;
  if (workspace_bytes > 0) PHI_CUDA_CHECK(cudaMalloc(&g->workspace_, workspace_bytes));
  *out = std::move(g);
  return {};
}

GemmLt::~GemmLt() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) lt_->cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

CudaStatus GemmLt::GetPlan(int m, int n, int k, bool d_f32, bool has_bias, Plan** plan) {
  const auto key = std::make_tuple(m, n, k, d_f32, has_bias);
  if (auto it = plans_.find(key); it != plans_.end()) {
    *plan = it->second.get();
    return {};
  }
  auto p = std::make_unique<Plan>();
  p->lt = lt_;
  const cudaDataType_t d_type = d_f32 ? CUDA_R_32F : CUDA_R_16BF;
  // Row-major D[M,N] = A[M,K] W[N,K]^T is column-major D^T[N,M] = W^T^T(N x K) * A^T(K x M):
  // cuBLASLt's "A" is our W (K x N column-major, transposed) and its "B" our A (K x M).
  PHI_CUBLAS_CHECK(lt_->cublasLtMatrixLayoutCreate(&p->w_layout, CUDA_R_16BF, k, n, k));
  PHI_CUBLAS_CHECK(lt_->cublasLtMatrixLayoutCreate(&p->a_layout, CUDA_R_16BF, k, m, k));
  PHI_CUBLAS_CHECK(lt_->cublasLtMatrixLayoutCreate(&p->d_layout, d_type, n, m, n));
  cublasLtMatmulPreference_t pref;
  PHI_CUBLAS_CHECK(lt_->cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = workspace_bytes_;
  lt_->cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool fuse = has_bias && attempt == 0;
    if (p->desc) lt_->cublasLtMatmulDescDestroy(p->desc);
    p->desc = nullptr;
    PHI_CUBLAS_CHECK(lt_->cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    PHI_CUBLAS_CHECK(lt_->cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t,
                                                    sizeof(op_t)));
    PHI_CUBLAS_CHECK(lt_->cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n,
                                                    sizeof(op_n)));
    const cublasLtEpilogue_t epi = fuse ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    PHI_CUBLAS_CHECK(lt_->cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                    sizeof(epi)));
    if (fuse) {
      PHI_CUBLAS_CHECK(lt_->cublasLtMatmulDescSetAttribute(
          p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &d_type, sizeof(d_type)));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = lt_->cublasLtMatmulAlgoGetHeuristic(
        static_cast<cublasLtHandle_t>(handle_), p->desc, p->w_layout, p->a_layout, p->d_layout,
        p->d_layout, pref, 1, &result, &found);
    if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
      p->algo = result.algo;
      p->fused_bias = fuse;
      lt_->cublasLtMatmulPreferenceDestroy(pref);
      *plan = p.get();
      plans_[key] = std::move(p);
      return {};
    }
    if (!has_bias) break;
  }
  lt_->cublasLtMatmulPreferenceDestroy(pref);
  return CudaStatus::Error("GemmLt: no cuBLASLt algorithm for M=" + std::to_string(m) +
                           " N=" + std::to_string(n) + " K=" + std::to_string(k) +
                           (d_f32 ? " (F32 out)" : " (BF16 out)"));
}

CudaStatus GemmLt::Matmul(const bf16* a, const bf16* w, const void* bias, void* d, bool d_f32,
                          float beta, int m, int n, int k, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(m >= 0 && n > 0 && k > 0, "GemmLt::Matmul: m >= 0, n > 0, k > 0");
  if (m == 0) return {};
  if (TakesGemv(a, w, m, k)) return gemv_forward(a, w, bias, d, d_f32, beta, m, n, k, stream);
  Plan* plan = nullptr;
  PHI_CUDA_RETURN_IF_ERROR(GetPlan(m, n, k, d_f32, bias != nullptr, &plan));
  if (plan->fused_bias) {
    PHI_CUBLAS_CHECK(lt_->cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof(bias)));
  }
  const float alpha = 1.0f;
  PHI_CUBLAS_CHECK(lt_->cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), plan->desc, &alpha, w,
                                  plan->w_layout, a, plan->a_layout, &beta, d, plan->d_layout, d,
                                  plan->d_layout, &plan->algo, workspace_, workspace_bytes_,
                                  stream));
  if (bias != nullptr && !plan->fused_bias) {
    used_bias_fallback_ = true;
    if (d_f32) {
      return bias_add_forward(static_cast<float*>(d), static_cast<const float*>(bias), m, n,
                              stream);
    }
    return bias_add_forward(static_cast<bf16*>(d), static_cast<const bf16*>(bias), m, n, stream);
  }
  return {};
}

}  // namespace phi::worker::cuda
