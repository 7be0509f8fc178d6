// cuBLASLt, loaded with dlopen on first use instead of linked at start-up.
//
// Why: libcublasLt.so.13 has a 92 KiB static TLS segment (PT_TLS MemSiz 0x17020). glibc
// carves the static TLS of every library loaded at start-up out of each new thread's stack,
// and Debian's civetweb creates its threads with a fixed 100 KiB stack (USE_STACK_SIZE=102400),
// so with cuBLASLt linked into phi-worker pthread_create returns EINVAL, civetweb's mg_start
// logs "Cannot create threads: error 0" and returns null, and the worker's /metrics server
// (hence the worker) does not start. A library that dlopen loads later (and that is not
// marked DF_STATIC_TLS, which libcublasLt is not) gets dynamic TLS from the heap instead, so
// thread stacks are unaffected. See bench/results/cuda_backend.md for the evidence.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_CUBLASLT_LOADER_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_CUBLASLT_LOADER_H_

#include <cublasLt.h>

#include "services/worker/backends/cuda/cuda_status.h"

namespace phi::worker::cuda {

// The cuBLASLt entry points the backend calls, with the library's own signatures.
struct CublasLtApi {
#define PHI_CUBLASLT_FN(name) decltype(&::name) name = nullptr;
  PHI_CUBLASLT_FN(cublasLtCreate)
  PHI_CUBLASLT_FN(cublasLtDestroy)
  PHI_CUBLASLT_FN(cublasLtMatmul)
  PHI_CUBLASLT_FN(cublasLtMatmulAlgoGetHeuristic)
  PHI_CUBLASLT_FN(cublasLtMatmulDescCreate)
  PHI_CUBLASLT_FN(cublasLtMatmulDescDestroy)
  PHI_CUBLASLT_FN(cublasLtMatmulDescSetAttribute)
  PHI_CUBLASLT_FN(cublasLtMatmulPreferenceCreate)
  PHI_CUBLASLT_FN(cublasLtMatmulPreferenceDestroy)
  PHI_CUBLASLT_FN(cublasLtMatmulPreferenceSetAttribute)
  PHI_CUBLASLT_FN(cublasLtMatrixLayoutCreate)
  PHI_CUBLASLT_FN(cublasLtMatrixLayoutDestroy)
#undef PHI_CUBLASLT_FN
};

// The soname tried first: libcublasLt.so.<major of the headers we compiled against>.
const char* CublasLtLibraryName();

// Loads cuBLASLt once per process (thread-safe) and returns its entry points. Fails naming
// the library and dlerror() when it is missing or lacks a symbol; the failure is remembered.
CudaStatus LoadCublasLt(const CublasLtApi** api);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_CUBLASLT_LOADER_H_
