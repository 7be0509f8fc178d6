// The messages[] of /v1/chat/completions and /tokenize: {role, content} objects whose content is
// a string or text parts; what OpenAI's SDKs put in an assistant message they return is accepted
// when neutral. Internal to the phi_gateway_openai target.
#ifndef PHI_SERVICES_GATEWAY_OPENAI_CHAT_MESSAGES_H_
#define PHI_SERVICES_GATEWAY_OPENAI_CHAT_MESSAGES_H_

#include "absl/status/status.h"
#include "phi/v1/common.pb.h"
#include "services/gateway/openai_json.h"
#include "services/gateway/openai_request.h"

namespace phi::gateway {

// messages[]: into ChatMessages (roles resolved; developer is system).
absl::Status ReadMessages(od::value& v, const OpenAiRequestLimits& limits,
                          google::protobuf::RepeatedPtrField<phi::v1::ChatMessage>* out);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_OPENAI_CHAT_MESSAGES_H_
