#include "services/common/active_calls.h"

namespace phi::common {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// gRPC creates one per call and deletes it with the call, after the status has been sent.
class ActiveCallInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ActiveCallInterceptor(ActiveCalls* calls) : calls_(calls) { calls_->Started(); }
  ~ActiveCallInterceptor() override { calls_->Ended(); }
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override { methods->Proceed(); }

 private:
  ActiveCalls* calls_;
};

class ActiveCallsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ActiveCallsInterceptorFactory(ActiveCalls* calls) : calls_(calls) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo*) override {
    return new ActiveCallInterceptor(calls_);
  }

 private:
  ActiveCalls* calls_;
};

}  // namespace

ActiveCalls::ActiveCalls() : last_ended_ns_(NowNs()) {}

std::chrono::steady_clock::time_point ActiveCalls::last_ended() const {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(last_ended_ns_.load(std::memory_order_acquire)));
}

void ActiveCalls::Ended() {
  // The time first, so that a reader who sees the count drop also sees this call's end.
  last_ended_ns_.store(NowNs(), std::memory_order_release);
  count_.fetch_sub(1, std::memory_order_acq_rel);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeActiveCallsInterceptorFactory(
    ActiveCalls* calls) {
  return std::make_unique<ActiveCallsInterceptorFactory>(calls);
}

}  // namespace phi::common
