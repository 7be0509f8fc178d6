// A public request from its wire bytes to GenerateParams, free of gRPC so that the fuzzers run
// the code the service runs: ParseRequestBytes checks every text field for UTF-8 before
// protobuf parses (protobuf would refuse the message with no field named), ParamsFromChat /
// ParamsFromComplete build the parameters (ChatML rendered; shared with the HTTP API).
#ifndef PHI_SERVICES_GATEWAY_REQUEST_PARAMS_H_
#define PHI_SERVICES_GATEWAY_REQUEST_PARAMS_H_

#include <cstddef>
#include <cstdint>

#include <google/protobuf/message.h>

#include "absl/status/statusor.h"
#include "phi/v1/gateway.pb.h"
#include "services/gateway/chatml.h"
#include "services/gateway/generation_service.h"

namespace phi::gateway {

// Parses `size` bytes into `msg`. A text field that is not valid UTF-8 is INVALID_ARGUMENT naming
// the field and the offset of its first bad byte ("messages[1].content: not valid UTF-8 at byte
// 17"); bytes that are not a `msg` at all are INVALID_ARGUMENT too.
absl::Status ParseRequestBytes(const uint8_t* data, size_t size, google::protobuf::Message* msg);

// Builds GenerateParams from the public requests.
absl::StatusOr<GenerateParams> ParamsFromChat(const phi::v1::ChatRequest& req, const ChatmlOptions& chatml);
absl::StatusOr<GenerateParams> ParamsFromComplete(const phi::v1::CompleteRequest& req);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_REQUEST_PARAMS_H_
