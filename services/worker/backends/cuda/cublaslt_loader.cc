#include "services/worker/backends/cuda/cublaslt_loader.h"

#include <cuda_runtime_api.h>
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
  std::string why;
  if (handle == nullptr) {
    const char* e = dlerror();
    why = e ? e : "unknown dlopen error";
    // Beside the CUDA runtime this process loaded: the toolkit and NVIDIA's images keep
    // cuBLASLt in the same folder, which need not be on the loader's search path.
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&cudaRuntimeGetVersion), &info) != 0 && info.dli_fname) {
      std::string dir = info.dli_fname;
      dir = dir.substr(0, dir.rfind('/') + 1);
      handle = dlopen((dir + CublasLtLibraryName()).c_str(), RTLD_NOW | RTLD_LOCAL);
    }
  }
  if (handle == nullptr) handle = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    out.error = std::string("cannot load cuBLASLt (") + CublasLtLibraryName() + "): " + why;
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
