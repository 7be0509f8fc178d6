#include "services/common/grpc_metrics_interceptor.h"

#include <chrono>
#include <string>

#include "services/common/grpc_status.h"

namespace phi::common {
namespace {

using grpc::experimental::InterceptionHookPoints;

struct RpcMetrics {
  metrics::Family<metrics::Counter>* requests;
  metrics::Family<metrics::Histogram>* duration;
};

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(const RpcMetrics& m, const char* full_method)
      : metrics_(m), start_(std::chrono::steady_clock::now()) {
    // "/phi.v1.TokenizerService/Encode" -> ("phi.v1.TokenizerService", "Encode").
    std::string full = full_method != nullptr ? full_method : "";
    if (!full.empty() && full[0] == '/') full.erase(0, 1);
    const size_t slash = full.find('/');
    service_ = slash == std::string::npos ? full : full.substr(0, slash);
    method_ = slash == std::string::npos ? "" : full.substr(slash + 1);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_.requests->WithLabels({service_, method_, std::string(GrpcCodeName(status.error_code()))}).Inc();
      metrics_.duration->WithLabels({service_, method_}).Observe(secs);
    }
    methods->Proceed();
  }

 private:
  RpcMetrics metrics_;
  std::chrono::steady_clock::time_point start_;
  std::string service_, method_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(metrics::Registry* registry)
      : metrics_{&registry->AddCounter("phi_grpc_server_requests_total",
                                       "gRPC requests handled, by method and status code.",
                                       {"service", "method", "code"}),
                 &registry->AddHistogram("phi_grpc_server_request_duration_seconds",
                                         "gRPC request duration from arrival to status, in seconds.",
                                         {"service", "method"}, metrics::LatencyBuckets())} {}

  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, info->method());
  }

 private:
  RpcMetrics metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeMetricsInterceptorFactory(
    metrics::Registry* registry) {
  return std::make_unique<MetricsInterceptorFactory>(registry);
}

}  // namespace phi::common
