// The one place where absl::Status and grpc::Status meet. Codes map one to one
// (both follow google.rpc.Code), so a client keeps the code the engine chose.
#ifndef PHI_SERVICES_COMMON_GRPC_STATUS_H_
#define PHI_SERVICES_COMMON_GRPC_STATUS_H_

#include <string_view>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace phi::common {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Canonical upper-case name of a gRPC code, e.g. "INVALID_ARGUMENT" (metrics labels).
std::string_view GrpcCodeName(grpc::StatusCode code);

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_GRPC_STATUS_H_
