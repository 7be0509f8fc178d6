#include "services/gateway/openai_chat_messages.h"

#include <simdjson.h>

#include <string>
#include <utility>

#include "services/gateway/chatml.h"

namespace phi::gateway {
namespace {

absl::Status UnsupportedPart(std::string_view at, std::string_view type) {
  return Invalid(Cat(at, ".type: only \"text\" parts are supported, got \"", Printable(type), "\""));
}

// messages[i].content[j]: {"type": "text", "text": string}, appended to `content`.
absl::Status ReadTextPart(od::value& part, const std::string& at, std::string* content) {
  od::object po;
  if (absl::Status s = GetObject(part, at, "an object {\"type\": \"text\", \"text\": string}", &po); !s.ok()) {
    return s;
  }
  std::string type;
  bool has_text = false;
  absl::Status ps = ForEachField(po, at + ".", [&](std::string_view pk, od::value& pf) -> absl::Status {
    const std::string pname = Cat(at, ".", Printable(pk));
    if (pk == "type") return ReadBoundedString(pf, pname, 64, &type);
    if (pk == "text") {
      std::string_view text;
      if (absl::Status s = ReadString(pf, pname, &text); !s.ok()) return s;
      content->append(text);
      has_text = true;
      return absl::OkStatus();
    }
    // {"type": "image_url", "image_url": ...}: the type is what is not supported.
    if (!type.empty() && type != "text") return UnsupportedPart(at, type);
    return Unknown(at + ".", pk);
  });
  if (!ps.ok()) return ps;
  if (type.empty()) return Invalid(Cat(at, ".type: required (\"text\")"));
  if (type != "text") return UnsupportedPart(at, type);
  if (!has_text) return Invalid(Cat(at, ".text: required"));
  return absl::OkStatus();
}

// messages[i].content (not null): a string, or an array of text parts joined.
absl::Status ReadContent(od::value& f, const std::string& name, phi::v1::ChatMessage* msg) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(f, &t); !s.ok()) return s;
  if (t == od::json_type::string) {
    std::string_view text;
    if (absl::Status s = ReadString(f, name, &text); !s.ok()) return s;
    msg->set_content(std::string(text));
    return absl::OkStatus();
  }
  if (t != od::json_type::array) return WrongType(name, "a string or an array of text parts", t);
  od::array parts;
  if (error_code e = f.get_array().get(parts)) return JsonError(e);
  std::string* content = msg->mutable_content();
  return ForEachElement(parts, [&](size_t j, od::value& part) {
    return ReadTextPart(part, Cat(name, "[", j, "]"), content);
  });
}

// The fields of a message other than role and content: what OpenAI's SDKs put in an assistant
// message they return (clients append it to the conversation) is accepted when neutral.
absl::Status ReadNeutralMessageField(std::string_view key, od::value& f, bool is_null, const std::string& at) {
  const std::string name = Cat(at, ".", Printable(key));
  if (key == "name") return is_null ? absl::OkStatus() : Invalid(Cat(name, ": not supported"));
  if (key == "tool_calls" || key == "annotations") {
    if (is_null) return absl::OkStatus();
    return EmptyArrayOnly(f, name, "not supported (only [] or null)");
  }
  if (key == "refusal" || key == "function_call" || key == "audio") {
    return is_null ? absl::OkStatus() : Invalid(Cat(name, ": not supported (only null)"));
  }
  return Unknown(at + ".", key);
}

// The role as sent (developer is system; tool roles refused); content required but for assistant.
absl::Status SetRole(const std::string& at, std::string role, bool has_content, phi::v1::ChatMessage* msg) {
  if (role.empty()) return Invalid(Cat(at, ".role: required, one of system, developer, user, assistant"));
  if (role == "developer") role = "system";  // OpenAI's newer name for system
  if (role == "tool" || role == "function") {
    return Invalid(Cat(at, ".role: ", role, " messages are not supported"));
  }
  msg->set_role(RoleFromName(role));
  if (msg->role() == phi::v1::ROLE_UNSPECIFIED) {
    return Invalid(
        Cat(at, ".role: must be one of system, developer, user, assistant, got \"", Printable(role), "\""));
  }
  if (!has_content && msg->role() != phi::v1::ROLE_ASSISTANT) {
    return Invalid(Cat(at, ".content: required (a string or an array of text parts)"));
  }
  return absl::OkStatus();
}

// messages[i]: {role, content, ...} into `msg`.
absl::Status ReadMessage(od::value& m, const std::string& at, phi::v1::ChatMessage* msg) {
  od::object o;
  if (absl::Status s = GetObject(m, at, "an object {role, content}", &o); !s.ok()) return s;
  std::string role;
  bool has_content = false;
  absl::Status fs = ForEachField(o, at + ".", [&](std::string_view key, od::value& f) -> absl::Status {
    const std::string name = Cat(at, ".", Printable(key));
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(f, &is_null); !s.ok()) return s;
    if (key == "role") {
      if (is_null) return Invalid(Cat(name, ": must be a string, got null"));
      return ReadBoundedString(f, name, 64, &role);
    }
    if (key == "content") {
      if (is_null) return absl::OkStatus();  // allowed for assistant only: checked with the role
      has_content = true;
      return ReadContent(f, name, msg);
    }
    return ReadNeutralMessageField(key, f, is_null, at);
  });
  if (!fs.ok()) return fs;
  return SetRole(at, std::move(role), has_content, msg);
}

}  // namespace

absl::Status ReadMessages(od::value& v, const OpenAiRequestLimits& limits,
                          google::protobuf::RepeatedPtrField<phi::v1::ChatMessage>* out) {
  od::array a;
  if (absl::Status s = GetArray(v, "messages", "a non-empty array of {role, content}", &a); !s.ok()) return s;
  absl::Status st = ForEachElement(a, [&](size_t i, od::value& m) -> absl::Status {
    if (i >= limits.max_messages) return Invalid(Cat("messages: at most ", limits.max_messages, " messages"));
    return ReadMessage(m, Cat("messages[", i, "]"), out->Add());
  });
  if (!st.ok()) return st;
  if (out->empty()) return Invalid("messages: must not be empty");
  return absl::OkStatus();
}

}  // namespace phi::gateway
