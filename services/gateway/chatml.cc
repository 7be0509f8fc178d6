#include "services/gateway/chatml.h"

#include "absl/strings/str_cat.h"

namespace phi::gateway {

std::string_view RoleName(phi::v1::Role role) {
  switch (role) {
    case phi::v1::ROLE_SYSTEM:
      return "system";
    case phi::v1::ROLE_USER:
      return "user";
    case phi::v1::ROLE_ASSISTANT:
      return "assistant";
    default:
      return "";
  }
}

phi::v1::Role RoleFromName(std::string_view name) {
  if (name == "system") return phi::v1::ROLE_SYSTEM;
  if (name == "user") return phi::v1::ROLE_USER;
  if (name == "assistant") return phi::v1::ROLE_ASSISTANT;
  return phi::v1::ROLE_UNSPECIFIED;
}

absl::Status ValidateConversation(const google::protobuf::RepeatedPtrField<phi::v1::ChatMessage>& messages,
                                  const ChatmlOptions& options) {
  if (messages.empty()) return absl::InvalidArgumentError("messages: at least 1 message is required");
  if (messages.size() > options.max_messages) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages: ", messages.size(), " messages, at most ", options.max_messages, " allowed"));
  }
  bool has_user = false;
  for (int i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (RoleName(m.role()).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role: must be system, user or assistant (got ",
                                                     static_cast<int>(m.role()), ")"));
    }
    if (m.role() == phi::v1::ROLE_SYSTEM && i != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "].role: a system message may only be the first message"));
    }
    if (m.content().size() > options.max_message_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].content: ", m.content().size(),
                                                     " bytes, at most ", options.max_message_bytes, " allowed"));
    }
    has_user = has_user || m.role() == phi::v1::ROLE_USER;
  }
  if (!has_user) return absl::InvalidArgumentError("messages: at least one message with role user is required");
  return absl::OkStatus();
}

namespace {

void AddSpecial(phi::v1::SegmentList* out, const char* name) { out->add_segments()->set_special_token(name); }
void AddText(phi::v1::SegmentList* out, std::string text) { out->add_segments()->set_text(std::move(text)); }

// One turn: <|im_start|> "role\ncontent" <|im_end|> "\n". The role line and the
// content form one text segment: Hugging Face encodes the whole span between
// two special tokens at once, and splitting it could change the merges.
void AddTurn(phi::v1::SegmentList* out, std::string_view role, std::string_view content) {
  AddSpecial(out, kImStart);
  std::string text;
  text.reserve(role.size() + 1 + content.size());
  text.append(role).append("\n").append(content);
  AddText(out, std::move(text));
  AddSpecial(out, kImEnd);
  AddText(out, "\n");
}

}  // namespace

absl::StatusOr<phi::v1::SegmentList> RenderChatml(
    const google::protobuf::RepeatedPtrField<phi::v1::ChatMessage>& messages, const ChatmlOptions& options) {
  if (absl::Status s = ValidateConversation(messages, options); !s.ok()) return s;
  phi::v1::SegmentList out;
  if (!options.default_system_prompt.empty() && messages[0].role() != phi::v1::ROLE_SYSTEM) {
    AddTurn(&out, "system", options.default_system_prompt);
  }
  for (const auto& m : messages) AddTurn(&out, RoleName(m.role()), m.content());
  // add_generation_prompt=True
  AddSpecial(&out, kImStart);
  AddText(&out, "assistant\n");
  return out;
}

std::string SegmentsToText(const phi::v1::SegmentList& segments) {
  std::string text;
  for (const auto& s : segments.segments()) {
    text += s.has_special_token() ? s.special_token() : s.text();
  }
  return text;
}

}  // namespace phi::gateway
