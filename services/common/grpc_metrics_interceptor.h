// Counts every RPC by method and status code and times it, for all services:
// phi_grpc_server_requests_total{service,method,code} and
// phi_grpc_server_request_duration_seconds{service,method}.
#ifndef PHI_SERVICES_COMMON_GRPC_METRICS_INTERCEPTOR_H_
#define PHI_SERVICES_COMMON_GRPC_METRICS_INTERCEPTOR_H_

#include <memory>

#include <grpcpp/support/server_interceptor.h>

#include "services/common/metrics/registry.h"

namespace phi::common {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeMetricsInterceptorFactory(
    metrics::Registry* registry);

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_GRPC_METRICS_INTERCEPTOR_H_
