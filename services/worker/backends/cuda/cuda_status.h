// The error type of the Abseil-free CUDA kernel library (launchers, GemmLt, PhiCudaModel): the
// one boundary to the project's absl::Status scheme (services/common/status_macros.h), which
// the runner crosses with ToAbslStatus (status_adapter.h). README.md says why the library
// has no Abseil. No raw cudaError_t or exception crosses the library boundary: every failure
// names the call, file and line.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_CUDA_STATUS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_CUDA_STATUS_H_

#include <string>
#include <utility>

namespace phi::worker::cuda {

class [[nodiscard]] CudaStatus {
 public:
  // What the caller should do (mapped to absl codes by status_adapter.h): fix the request,
  // wait for memory, or treat the device as failed.
  enum class Code { kOk, kInvalidArgument, kResourceExhausted, kInternal };

  CudaStatus() = default;
  static CudaStatus Error(std::string message) { return CudaStatus(Code::kInternal, std::move(message)); }
  static CudaStatus Invalid(std::string message) {
    return CudaStatus(Code::kInvalidArgument, std::move(message));
  }
  static CudaStatus Exhausted(std::string message) {
    return CudaStatus(Code::kResourceExhausted, std::move(message));
  }
  // "file:line: what: detail" for a failed call.
  static CudaStatus At(const char* file, int line, const std::string& what,
                       const std::string& detail);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  CudaStatus(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// Names for CUDA runtime / cuBLAS status codes (defined in cuda_status.cc).
std::string CudaErrorString(int cuda_error);
std::string CublasErrorString(int cublas_status);

}  // namespace phi::worker::cuda

// Evaluates a CUDA runtime call; on failure returns a CudaStatus naming the call and the place.
#define PHI_CUDA_CHECK(call)                                                             \
  do {                                                                                   \
    const int phi_cuda_err_ = static_cast<int>(call);                                    \
    if (phi_cuda_err_ != 0) {                                                            \
      return ::phi::worker::cuda::CudaStatus::At(__FILE__, __LINE__, #call,              \
                                                 ::phi::worker::cuda::CudaErrorString(   \
                                                     phi_cuda_err_));                    \
    }                                                                                    \
  } while (0)

// Evaluates a cuBLAS / cuBLASLt call.
#define PHI_CUBLAS_CHECK(call)                                                           \
  do {                                                                                   \
    const int phi_cublas_st_ = static_cast<int>(call);                                   \
    if (phi_cublas_st_ != 0) {                                                           \
      return ::phi::worker::cuda::CudaStatus::At(__FILE__, __LINE__, #call,              \
                                                 ::phi::worker::cuda::CublasErrorString( \
                                                     phi_cublas_st_));                   \
    }                                                                                    \
  } while (0)

// Argument checks in launchers: refuses with a message naming the argument.
#define PHI_CUDA_REQUIRE(cond, msg)                                                        \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      return ::phi::worker::cuda::CudaStatus::At(__FILE__, __LINE__, #cond, (msg));        \
    }                                                                                      \
  } while (0)

#define PHI_CUDA_RETURN_IF_ERROR(expr)                        \
  do {                                                        \
    ::phi::worker::cuda::CudaStatus phi_cuda_st_ = (expr);    \
    if (!phi_cuda_st_.ok()) return phi_cuda_st_;              \
  } while (0)

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_CUDA_STATUS_H_
