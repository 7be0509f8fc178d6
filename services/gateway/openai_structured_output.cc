#include "services/gateway/openai_structured_output.h"

#include <simdjson.h>

#include <optional>
#include <utility>

#include "services/gateway/openai_request_bounds.h"

namespace phi::gateway {
namespace {

// A JSON schema's text: valid JSON (On Demand skips a value without checking all of it, so the
// text is parsed again whole), an object, nested at most max_depth deep, at most
// kMaxConstraintBytes.
absl::Status CheckSchemaText(std::string_view text, std::string_view name, size_t max_depth) {
  if (text.size() > kMaxConstraintBytes) {
    return Invalid(Cat(name, ": a schema of at most ", kMaxConstraintBytes, " bytes, got ", text.size()));
  }
  thread_local simdjson::dom::parser parser;
  if (parser.max_depth() != max_depth || parser.capacity() < text.size()) {
    if (parser.allocate(std::max<size_t>(text.size(), 4096), max_depth) != simdjson::SUCCESS) {
      return absl::ResourceExhaustedError(Cat(name, ": out of memory while parsing"));
    }
  }
  simdjson::dom::element root;
  if (error_code e = parser.parse(text.data(), text.size(), /*realloc_if_needed=*/true).get(root)) {
    if (e == simdjson::DEPTH_ERROR) return Invalid(Cat(name, ": nested deeper than ", max_depth));
    return Invalid(Cat(name, ": not valid JSON (", ErrorName(e), ")"));
  }
  if (!root.is_object()) return Invalid(Cat(name, ": must be a JSON schema object"));
  return absl::OkStatus();
}

// OpenAI's json_schema.name: 1 to 64 of a-z, A-Z, 0-9, _ and -.
bool ValidSchemaName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

// response_format.json_schema: {name, description?, schema?, strict?}. Without a schema: any
// JSON object. strict is accepted either way: the output always matches.
absl::Status ReadJsonSchemaFormat(od::value& v, size_t max_depth, phi::v1::Constraint* c) {
  constexpr std::string_view kAt = "response_format.json_schema";
  od::object o;
  if (absl::Status s = GetObject(v, kAt, "an object {name, schema, description, strict}", &o); !s.ok()) return s;
  bool has_name = false;
  std::optional<std::string> schema;
  absl::Status st = ForEachField(o, Cat(kAt, "."), [&](std::string_view k, od::value& f) -> absl::Status {
    const std::string name = Cat(kAt, ".", Printable(k));
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(f, &is_null); !s.ok()) return s;
    if (k != "name" && k != "description" && k != "schema" && k != "strict") return Unknown(Cat(kAt, "."), k);
    if (is_null) return absl::OkStatus();
    if (k == "name") {
      std::string_view n;
      if (absl::Status s = ReadString(f, name, &n); !s.ok()) return s;
      if (!ValidSchemaName(n)) {
        return Invalid(Cat(name, ": must be 1 to 64 of a-z, A-Z, 0-9, _ and -, got \"", Printable(n), "\""));
      }
      has_name = true;
      return absl::OkStatus();
    }
    if (k == "description") {
      std::string d;
      return ReadBoundedString(f, name, kMaxDescriptionBytes, &d);
    }
    if (k == "strict") {
      bool b = false;
      return ReadBool(f, name, &b);
    }
    return ReadSchema(f, name, max_depth, /*in_string=*/false, &schema.emplace());
  });
  if (!st.ok()) return st;
  if (!has_name) return Invalid(Cat(kAt, ".name: required, 1 to 64 of a-z, A-Z, 0-9, _ and -"));
  if (schema) {
    c->set_json_schema(std::move(*schema));
  } else {
    c->set_json_object(true);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadSchema(od::value& v, std::string_view name, size_t max_depth, bool in_string, std::string* out) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  std::string_view text;
  if (t == od::json_type::string && in_string) {
    if (absl::Status s = ReadString(v, name, &text); !s.ok()) return s;
  } else if (t == od::json_type::object) {
    od::object o;
    if (error_code e = v.get_object().get(o)) return JsonError(e);
    if (error_code e = o.raw_json().get(text)) return JsonError(e);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\n' || text.back() == '\r')) {
      text.remove_suffix(1);
    }
  } else {
    return WrongType(name, in_string ? "a JSON schema (an object, or a string holding one)" : "a JSON schema object",
                     t);
  }
  if (absl::Status s = CheckSchemaText(text, name, max_depth); !s.ok()) return s;
  out->assign(text);
  return absl::OkStatus();
}

absl::Status ReadResponseFormat(od::value& v, size_t max_depth, phi::v1::Constraint* c) {
  od::object o;
  constexpr std::string_view kWant = "an object {\"type\": \"text\" | \"json_object\" | \"json_schema\"}";
  if (absl::Status s = GetObject(v, "response_format", kWant, &o); !s.ok()) return s;
  std::string type;
  bool has_schema = false;
  absl::Status st = ForEachField(o, "response_format.", [&](std::string_view k, od::value& f) -> absl::Status {
    if (k == "type") return ReadBoundedString(f, "response_format.type", 64, &type);
    if (k == "json_schema") {
      bool is_null = false;
      if (absl::Status s = ConsumeIfNull(f, &is_null); !s.ok() || is_null) return s;
      has_schema = true;
      return ReadJsonSchemaFormat(f, max_depth, c);
    }
    return Unknown("response_format.", k);
  });
  if (!st.ok()) return st;
  if (type.empty()) return Invalid("response_format.type: required, one of text, json_object, json_schema");
  if (type != "text" && type != "json_object" && type != "json_schema") {
    return Invalid(
        Cat("response_format.type: must be one of text, json_object, json_schema, got \"", Printable(type), "\""));
  }
  if (type == "json_schema") {
    if (!has_schema) return Invalid("response_format.json_schema: required with type json_schema ({name, schema})");
    return absl::OkStatus();
  }
  if (has_schema) return Invalid("response_format.json_schema: only with type json_schema");
  if (type == "json_object") c->set_json_object(true);
  return absl::OkStatus();
}

absl::Status ReadConstraintText(od::value& v, std::string_view name, std::string* out) {
  std::string_view s;
  if (absl::Status st = ReadString(v, name, &s); !st.ok()) return st;
  if (s.empty() || s.size() > kMaxConstraintBytes) {
    return Invalid(Cat(name, ": must be a non-empty string of at most ", kMaxConstraintBytes, " bytes, got ", s.size(),
                       " bytes"));
  }
  out->assign(s);
  return absl::OkStatus();
}

absl::Status ReadGuidedChoice(od::value& v, phi::v1::ChoiceList* out) {
  od::array a;
  if (absl::Status s = GetArray(v, "guided_choice", "an array of strings", &a); !s.ok()) return s;
  size_t bytes = 0;
  absl::Status st = ForEachElement(a, [&](size_t i, od::value& e) {
    if (i >= kMaxGuidedChoices) return Invalid(Cat("guided_choice: at most ", kMaxGuidedChoices, " strings"));
    const std::string name = Cat("guided_choice[", i, "]");
    std::string_view s;
    if (absl::Status r = ReadString(e, name, &s); !r.ok()) return r;
    if (s.empty()) return Invalid(Cat(name, ": must not be empty"));
    if ((bytes += s.size()) > kMaxConstraintBytes) {
      return Invalid(Cat("guided_choice: at most ", kMaxConstraintBytes, " bytes of strings together"));
    }
    out->add_choices(std::string(s));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  if (out->choices().empty()) return Invalid("guided_choice: must not be empty (1 to 256 strings)");
  return absl::OkStatus();
}

}  // namespace phi::gateway
