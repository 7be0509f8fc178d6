#include "services/worker/backends/cuda/cublaslt_loader.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace phi::worker::cuda {
namespace {

#define PHI_STR2(x) #x
#define PHI_STR(x) PHI_STR2(x)

struct Loaded {
  CublasLtApi api;
  std::string error;  // empty when loaded
};

Loaded LoadOnce() {
  Loaded out;
  // RTLD_LOCAL: nothing else in the process should bind to cuBLASLt's symbols by accident.
  void* handle = dlopen(CublasLtLibraryName(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) handle = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    out.error = std::string("cannot load cuBLASLt (") + CublasLtLibraryName() +
                "): " + (why ? why : "unknown dlopen error");
    return out;
  }
#define PHI_CUBLASLT_LOAD(name)                                                             \
  out.api.name = reinterpret_cast<decltype(out.api.name)>(dlsym(handle, #name));            \
  if (out.api.name == nullptr) {                                                            \
    out.error = std::string("cuBLASLt (") + CublasLtLibraryName() + ") lacks symbol " #name; \
    return out;                                                                             \
  }
  PHI_CUBLASLT_LOAD(cublasLtCreate)
  PHI_CUBLASLT_LOAD(cublasLtDestroy)
  PHI_CUBLASLT_LOAD(cublasLtMatmul)
  PHI_CUBLASLT_LOAD(cublasLtMatmulAlgoGetHeuristic)
  PHI_CUBLASLT_LOAD(cublasLtMatmulDescCreate)
  PHI_CUBLASLT_LOAD(cublasLtMatmulDescDestroy)
  PHI_CUBLASLT_LOAD(cublasLtMatmulDescSetAttribute)
  PHI_CUBLASLT_LOAD(cublasLtMatmulPreferenceCreate)
  PHI_CUBLASLT_LOAD(cublasLtMatmulPreferenceDestroy)
  PHI_CUBLASLT_LOAD(cublasLtMatmulPreferenceSetAttribute)
  PHI_CUBLASLT_LOAD(cublasLtMatrixLayoutCreate)
  PHI_CUBLASLT_LOAD(cublasLtMatrixLayoutDestroy)
#undef PHI_CUBLASLT_LOAD
  // The handle stays open for the life of the process (cuBLASLt handles may outlive callers).
  return out;
}

}  // namespace

const char* CublasLtLibraryName() { return "libcublasLt.so." PHI_STR(CUBLAS_VER_MAJOR); }

CudaStatus LoadCublasLt(const CublasLtApi** api) {
  static std::once_flag once;
  static Loaded* loaded = nullptr;
  std::call_once(once, [] { loaded = new Loaded(LoadOnce()); });
  if (!loaded->error.empty()) return CudaStatus::Error(loaded->error);
  *api = &loaded->api;
  return {};
}

}  // namespace phi::worker::cuda
