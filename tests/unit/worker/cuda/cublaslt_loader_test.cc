// cuBLASLt is dlopen-ed, not linked (cublaslt_loader.h): on a machine with the CUDA toolkit
// (no GPU needed) the loader resolves every entry point, the library is absent from the
// process until then, and afterwards a thread with civetweb's fixed 100 KiB stack still
// starts — the failure that linking libcublasLt (92 KiB of static TLS) caused in phi-worker.
#include "services/worker/backends/cuda/cublaslt_loader.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <cstring>
#include <fstream>
#include <string>

namespace phi::worker::cuda {
namespace {

bool Mapped(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find(name) != std::string::npos) return true;
  }
  return false;
}

// pthread_create's result for a thread with an explicit stack of `bytes`.
int StartThreadWithStack(size_t bytes) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, bytes);
  pthread_t t;
  const int rc = pthread_create(&t, &attr, [](void*) -> void* { return nullptr; }, nullptr);
  pthread_attr_destroy(&attr);
  if (rc == 0) pthread_join(t, nullptr);
  return rc;
}

TEST(CublasLtLoader, LoadsOnDemandAndKeepsSmallThreadStacksWorking) {
  // Debian's civetweb: USE_STACK_SIZE=102400.
  constexpr size_t kCivetwebStack = 102400;
  ASSERT_FALSE(Mapped("libcublasLt")) << "cuBLASLt is linked at start-up again";
  ASSERT_EQ(StartThreadWithStack(kCivetwebStack), 0);
  const CublasLtApi* api = nullptr;
  const CudaStatus st = LoadCublasLt(&api);
  if (!st.ok()) GTEST_SKIP() << "no cuBLASLt on this machine: " << st.message();
  ASSERT_NE(api, nullptr);
  EXPECT_NE(api->cublasLtCreate, nullptr);
  EXPECT_NE(api->cublasLtMatmul, nullptr);
  EXPECT_NE(api->cublasLtMatrixLayoutDestroy, nullptr);
  EXPECT_TRUE(Mapped("libcublasLt")) << CublasLtLibraryName();
  EXPECT_EQ(StartThreadWithStack(kCivetwebStack), 0)
      << "a 100 KiB-stack thread fails after loading cuBLASLt: " << std::strerror(
             StartThreadWithStack(kCivetwebStack));
  // Loaded once: the same table again.
  const CublasLtApi* again = nullptr;
  ASSERT_TRUE(LoadCublasLt(&again).ok());
  EXPECT_EQ(again, api);
}

}  // namespace
}  // namespace phi::worker::cuda
