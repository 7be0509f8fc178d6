// Field checks of a generation request that hold whatever the model (the bounds in
// services/common/request_limits.h, a JSON schema that parses, constraint sizes): run by
// Generation before anything is encoded or sent. The model's own bounds (vocabulary, context)
// are checked once the model is known (Generation::CheckIds, ResolveLengths).
#ifndef PHI_SERVICES_GATEWAY_REQUEST_VALIDATION_H_
#define PHI_SERVICES_GATEWAY_REQUEST_VALIDATION_H_

#include "absl/status/status.h"
#include "phi/v1/common.pb.h"
#include "services/gateway/generation_service.h"

namespace phi::gateway {

// Field-by-field checks of sampling and stopping (INVALID_ARGUMENT naming the field as the
// gRPC API spells it, "sampling.logit_bias[50256]", and its range). ValidateCommon adds the
// request-level fields (top_logprobs, n, best_of).
absl::Status ValidateSampling(const phi::v1::SamplingParams& s);
absl::Status ValidateStopping(const phi::v1::StoppingCriteria& s);
absl::Status ValidateCommon(const GenerateParams& p);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_REQUEST_VALIDATION_H_
