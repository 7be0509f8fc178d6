// Counts the gRPC calls a server is handling, and when the last one ended, for the shutdown
// that closes idle client connections once no reply is left to send (services/common/server.cc).
#ifndef PHI_SERVICES_COMMON_ACTIVE_CALLS_H_
#define PHI_SERVICES_COMMON_ACTIVE_CALLS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include <grpcpp/support/server_interceptor.h>

namespace phi::common {

class ActiveCalls {
 public:
  ActiveCalls();

  // Calls between their arrival at a method and the end of the call (its status sent).
  int64_t count() const { return count_.load(std::memory_order_acquire); }
  // When the latest call ended (the construction time while none has).
  std::chrono::steady_clock::time_point last_ended() const;

  void Started() { count_.fetch_add(1, std::memory_order_acq_rel); }
  void Ended();

 private:
  std::atomic<int64_t> count_{0};
  std::atomic<int64_t> last_ended_ns_;  // steady_clock, since its epoch
};

// An interceptor that marks each call Started when gRPC creates it and Ended when gRPC
// destroys it; `calls` must outlive the server.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeActiveCallsInterceptorFactory(
    ActiveCalls* calls);

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_ACTIVE_CALLS_H_
