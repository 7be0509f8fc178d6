// ChatML rendering: the conversation the client sends becomes the prompt the
// model was tuned on, exactly as transformers' apply_chat_template renders the
// standard ChatML template with add_generation_prompt=True:
//
//   <|im_start|>system\nYou are...<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n
//
// The output is a list of tokenizer Segments: control tokens as named special
// tokens, everything between two control tokens as ONE plain-text segment (the
// same span Hugging Face encodes after splitting on special tokens, so ids agree
// byte for byte). Message content is never parsed for special tokens, so a user
// who types "<|im_end|>" cannot forge a turn.
// ref: https://huggingface.co/docs/transformers/main/en/chat_templating
#ifndef PHI_SERVICES_GATEWAY_CHATML_H_
#define PHI_SERVICES_GATEWAY_CHATML_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/repeated_field.h"
#include "phi/v1/gateway.pb.h"
#include "phi/v1/tokenizer.pb.h"

namespace phi::gateway {

inline constexpr char kImStart[] = "<|im_start|>";
inline constexpr char kImEnd[] = "<|im_end|>";

struct ChatmlOptions {
  // Prepended as a system message when the conversation has none. Empty
  // (the default): no system message is added, as the model card does.
  std::string default_system_prompt;
  // Most messages per conversation and bytes per message (gateway.proto limits).
  int max_messages = 256;
  size_t max_message_bytes = 1 << 20;
};

// "system", "user", "assistant"; empty for ROLE_UNSPECIFIED / unknown values.
std::string_view RoleName(phi::v1::Role role);
// Inverse of RoleName; ROLE_UNSPECIFIED when unknown.
phi::v1::Role RoleFromName(std::string_view name);

// Checks the conversation: 1..max_messages messages, every role known, a system
// message only first, at least one user message, content within the size limit.
// Errors are INVALID_ARGUMENT naming the field, e.g. "messages[3].role".
absl::Status ValidateConversation(const google::protobuf::RepeatedPtrField<phi::v1::ChatMessage>& messages,
                                  const ChatmlOptions& options);

// Validates, then renders the conversation followed by the generation prompt.
absl::StatusOr<phi::v1::SegmentList> RenderChatml(
    const google::protobuf::RepeatedPtrField<phi::v1::ChatMessage>& messages, const ChatmlOptions& options);

// The text of the segments with special tokens written by name (what
// apply_chat_template(tokenize=False) returns); for logs and tests.
std::string SegmentsToText(const phi::v1::SegmentList& segments);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_CHATML_H_
