// Requests to load and unload LoRA adapters: vLLM's HTTP bodies (POST /v1/load_lora_adapter
// {"lora_name", "lora_path"}, POST /v1/unload_lora_adapter {"lora_name"}) parsed like every other
// OpenAI body (openai_json.h: types checked, unknown or repeated keys refused, errors naming the
// field), and the field checks gRPC's LoadLoraAdapterRequest / UnloadLoraAdapterRequest share.
// ref: vLLM's docs/features/lora.md (dynamic adapter loading).
#ifndef PHI_SERVICES_GATEWAY_LORA_REQUEST_H_
#define PHI_SERVICES_GATEWAY_LORA_REQUEST_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "phi/v1/gateway.pb.h"
#include "services/gateway/openai_request.h"

namespace phi::gateway {

inline constexpr size_t kMaxLoraNameBytes = 128;
inline constexpr size_t kMaxLoraPathBytes = 4096;

// lora_name: 1 to 128 bytes of [A-Za-z0-9._-] (what GenerateRequest.adapter and metrics carry).
absl::Status ValidateLoraName(std::string_view name);
// lora_path: 1 to 4096 bytes, no NUL.
absl::Status ValidateLoraPath(std::string_view path);

absl::StatusOr<phi::v1::LoadLoraAdapterRequest> ParseLoadLoraAdapterRequest(std::string_view body,
                                                                            const OpenAiRequestLimits& limits = {});
absl::StatusOr<phi::v1::UnloadLoraAdapterRequest> ParseUnloadLoraAdapterRequest(
    std::string_view body, const OpenAiRequestLimits& limits = {});

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_LORA_REQUEST_H_
