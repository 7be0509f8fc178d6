#include "services/gateway/openai_json.h"

#include <algorithm>
#include <array>
#include <bitset>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "services/gateway/openai_request_bounds.h"

namespace phi::gateway {

namespace {

// Bodies up to this size reuse a per-thread parser (its buffers are ~7x this); larger ones get
// a parser of their own, freed on return.
constexpr size_t kReusedParserBytes = 64 << 10;

}  // namespace

absl::Status Invalid(std::string_view m) { return absl::InvalidArgumentError(absl::string_view(m.data(), m.size())); }

const char* ErrorName(error_code e) {
  switch (e) {
    case simdjson::CAPACITY: return "CAPACITY";
    case simdjson::MEMALLOC: return "MEMALLOC";
    case simdjson::TAPE_ERROR: return "TAPE_ERROR";
    case simdjson::DEPTH_ERROR: return "DEPTH_ERROR";
    case simdjson::STRING_ERROR: return "STRING_ERROR";
    case simdjson::T_ATOM_ERROR: return "T_ATOM_ERROR";
    case simdjson::F_ATOM_ERROR: return "F_ATOM_ERROR";
    case simdjson::N_ATOM_ERROR: return "N_ATOM_ERROR";
    case simdjson::NUMBER_ERROR: return "NUMBER_ERROR";
    case simdjson::UTF8_ERROR: return "UTF8_ERROR";
    case simdjson::EMPTY: return "EMPTY";
    case simdjson::UNESCAPED_CHARS: return "UNESCAPED_CHARS";
    case simdjson::UNCLOSED_STRING: return "UNCLOSED_STRING";
    case simdjson::INCORRECT_TYPE: return "INCORRECT_TYPE";
    case simdjson::NUMBER_OUT_OF_RANGE: return "NUMBER_OUT_OF_RANGE";
    case simdjson::INCOMPLETE_ARRAY_OR_OBJECT: return "INCOMPLETE_ARRAY_OR_OBJECT";
    case simdjson::TRAILING_CONTENT: return "TRAILING_CONTENT";
    default: return "ERROR";
  }
}

absl::Status JsonError(error_code e) {
  if (e == simdjson::UTF8_ERROR) return Invalid("body: not valid UTF-8");
  if (e == simdjson::MEMALLOC) return absl::ResourceExhaustedError("body: out of memory while parsing");
  return Invalid(Cat("body: not valid JSON (", ErrorName(e), ")"));
}

// Client text in an error message: ASCII printable kept, everything else \xNN (the message goes
// into JSON and logs: no control bytes, no UTF-8 cut in half), at most `max` input bytes.
std::string Printable(std::string_view s, size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out.append({'\\', 'x', kHex[c >> 4], kHex[c & 15]});
    }
  }
  if (s.size() > max) out.append("...");
  return out;
}

std::string_view KindName(od::json_type t) {
  switch (t) {
    case od::json_type::array: return "array";
    case od::json_type::object: return "object";
    case od::json_type::number: return "number";
    case od::json_type::string: return "string";
    case od::json_type::boolean: return "boolean";
    case od::json_type::null: return "null";
  }
  return "?";
}

// The JSON type of `v` without consuming it; a token no type starts with is invalid JSON.
absl::Status TypeOf(od::value& v, od::json_type* t) {
  if (error_code e = v.type().get(*t)) return JsonError(e);
  return absl::OkStatus();
}

absl::Status WrongType(std::string_view name, std::string_view want, od::json_type got) {
  return Invalid(Cat(name, ": must be ", want, ", got ", KindName(got)));
}

namespace {

// A number's text as sent (for "got 2.5"), trimmed and bounded.
std::string NumberText(od::value& v) {
  std::string_view raw = v.raw_json_token();
  while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\t' || raw.back() == '\n' || raw.back() == '\r')) {
    raw.remove_suffix(1);
  }
  return Printable(raw, 40);
}

}  // namespace

// Consumes `v` when it is null.
absl::Status ConsumeIfNull(od::value& v, bool* is_null) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  *is_null = false;
  if (t != od::json_type::null) return absl::OkStatus();
  bool n = false;
  if (error_code e = v.is_null().get(n)) return JsonError(e);
  if (!n) return Invalid("body: not valid JSON (N_ATOM_ERROR)");
  *is_null = true;
  return absl::OkStatus();
}

absl::Status ReadBool(od::value& v, std::string_view name, bool* out) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  if (t != od::json_type::boolean) return WrongType(name, "a boolean", t);
  if (error_code e = v.get_bool().get(*out)) return JsonError(e);
  return absl::OkStatus();
}

// An integer in [lo, hi]; a number with a fraction or exponent (16.0, 1e3) is refused.
absl::Status ReadInt(od::value& v, std::string_view name, int64_t lo, int64_t hi, int64_t* out) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  auto range = [&] { return Cat("an integer in [", lo, ", ", hi, "]"); };
  if (t != od::json_type::number) return WrongType(name, range(), t);
  int64_t x = 0;
  if (v.get_int64().get(x) || x < lo || x > hi) {
    return Invalid(Cat(name, ": must be ", range(), ", got ", NumberText(v)));
  }
  *out = x;
  return absl::OkStatus();
}

// A finite number in [lo, hi], or (lo, hi] when lo_open.
absl::Status ReadNumber(od::value& v, std::string_view name, double lo, double hi, bool lo_open, double* out) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  auto range = [&] { return Cat("a number in ", lo_open ? "(" : "[", lo, ", ", hi, "]"); };
  if (t != od::json_type::number) return WrongType(name, range(), t);
  double x = 0;
  if (v.get_double().get(x)) return Invalid(Cat(name, ": must be ", range(), ", got ", NumberText(v)));
  *out = x;  // also when out of range: callers may refine the message
  if (!std::isfinite(x) || x < lo || (lo_open && x == lo) || x > hi) {
    return Invalid(Cat(name, ": must be ", range(), ", got ", NumberText(v)));
  }
  return absl::OkStatus();
}

absl::Status ReadString(od::value& v, std::string_view name, std::string_view* out) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  if (t != od::json_type::string) return WrongType(name, "a string", t);
  if (error_code e = v.get_string().get(*out)) {
    return Invalid(Cat(name, ": not a valid JSON string (", ErrorName(e), ")"));
  }
  return absl::OkStatus();
}

absl::Status ReadBoundedString(od::value& v, std::string_view name, size_t max_bytes, std::string* out) {
  std::string_view s;
  if (absl::Status st = ReadString(v, name, &s); !st.ok()) return st;
  if (s.size() > max_bytes) {
    return Invalid(Cat(name, ": must be a string of at most ", max_bytes, " bytes, got ", s.size()));
  }
  out->assign(s);
  return absl::OkStatus();
}

absl::Status GetArray(od::value& v, std::string_view name, std::string_view want, od::array* out) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  if (t != od::json_type::array) return WrongType(name, want, t);
  if (error_code e = v.get_array().get(*out)) return JsonError(e);
  return absl::OkStatus();
}

absl::Status GetObject(od::value& v, std::string_view name, std::string_view want, od::object* out) {
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  if (t != od::json_type::object) return WrongType(name, want, t);
  if (error_code e = v.get_object().get(*out)) return JsonError(e);
  return absl::OkStatus();
}

// Calls fn(index, element) for each element of an array.
absl::Status ForEachElement(od::array& a, absl::FunctionRef<absl::Status(size_t, od::value&)> fn) {
  size_t i = 0;
  for (auto r : a) {
    od::value v;
    if (error_code e = r.get(v)) return JsonError(e);
    if (absl::Status s = fn(i++, v); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Calls fn(key, value) for each field of an object; a key seen twice is refused.
absl::Status ForEachField(od::object& o, std::string_view prefix,
                          absl::FunctionRef<absl::Status(std::string_view, od::value&)> fn) {
  std::vector<std::string_view> seen;  // keys live in the parser's string buffer until it is reused
  for (auto r : o) {
    od::field f;
    if (error_code e = std::move(r).get(f)) return JsonError(e);
    std::string_view key;
    if (error_code e = f.unescaped_key().get(key)) return JsonError(e);
    for (std::string_view k : seen) {
      if (k == key) return Invalid(Cat(prefix, Printable(key), ": given twice"));
    }
    // The handlers refuse unknown keys, so few distinct keys get here.
    seen.push_back(key);
    if (absl::Status s = fn(key, f.value()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Unknown(std::string_view prefix, std::string_view key) {
  return Invalid(Cat(prefix, Printable(key), ": unknown parameter"));
}

namespace {

// The schema whose value container opens at `depth`, given the keys of the objects around it
// (keys[d]: the current key of the object at depth d); "" when it is not one.
std::string_view SchemaAt(const std::array<std::string_view, 4>& keys, size_t depth) {
  if (depth == 2 && keys[1] == "guided_json") return "guided_json";
  if (depth == 4 && keys[1] == "response_format" && keys[2] == "json_schema" && keys[3] == "schema") {
    return "response_format.json_schema.schema";
  }
  return "";
}

// Before any parsing: the body is one object, nested at most max_depth deep (a JSON schema at
// most max_schema_depth from its own braces), with nothing after it. One pass, no allocation;
// a body refused here never reaches the parser.
absl::Status ScanStructure(std::string_view s, const OpenAiRequestLimits& limits) {
  auto is_ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  size_t i = 0;
  const size_t n = s.size();
  while (i < n && is_ws(s[i])) ++i;
  if (i == n) return Invalid("body: not valid JSON (EMPTY)");
  if (s[i] != '{') {
    const char c = s[i];
    std::string_view kind = c == '['                               ? "array"
                            : c == '"'                             ? "string"
                            : (c == 't' || c == 'f')               ? "boolean"
                            : c == 'n'                             ? "null"
                            : (c == '-' || (c >= '0' && c <= '9')) ? "number"
                                                                   : "";
    if (kind.empty()) return Invalid("body: not valid JSON (TAPE_ERROR)");
    return Invalid(Cat("body: must be a JSON object, got ", kind));
  }
  size_t depth = 0;
  std::array<std::string_view, 4> keys{};  // as sent (escapes not resolved)
  size_t schema_base = 0;                  // depth of the schema's outermost container; 0: outside
  std::string_view schema;
  for (; i < n; ++i) {
    const char c = s[i];
    if (c == '"') {
      const size_t start = i + 1;
      for (++i; i < n && s[i] != '"'; ++i) {
        if (s[i] == '\\') ++i;
      }
      if (i >= n) return Invalid("body: not valid JSON (UNCLOSED_STRING)");
      if (depth < keys.size()) {
        size_t j = i + 1;
        while (j < n && is_ws(s[j])) ++j;
        if (j < n && s[j] == ':') keys[depth] = s.substr(start, i - start);
      }
    } else if (c == '{' || c == '[') {
      ++depth;
      if (schema_base == 0 && !(schema = SchemaAt(keys, depth)).empty()) schema_base = depth;
      if (schema_base != 0) {
        if (depth - schema_base + 1 > limits.max_schema_depth) {
          return Invalid(Cat(schema, ": nested deeper than ", limits.max_schema_depth));
        }
      } else if (depth > limits.max_depth) {
        return Invalid(Cat("body: nested deeper than ", limits.max_depth));
      }
      if (depth < keys.size()) keys[depth] = {};
    } else if (c == '}' || c == ']') {
      if (depth == schema_base) schema_base = 0;
      if (--depth == 0) {
        ++i;
        break;
      }
    }
  }
  if (depth != 0) return Invalid("body: not valid JSON (INCOMPLETE_ARRAY_OR_OBJECT)");
  while (i < n && is_ws(s[i])) ++i;
  if (i != n) return Invalid("body: not valid JSON (TRAILING_CONTENT)");
  return absl::OkStatus();
}

}  // namespace

// Parses `body` and calls fn(key, value) for each top-level field (keys unique, nulls included).
absl::Status ForEachTopLevelField(std::string_view body, const OpenAiRequestLimits& limits,
                                  absl::FunctionRef<absl::Status(std::string_view, od::value&)> fn) {
  if (absl::Status s = ScanStructure(body, limits); !s.ok()) return s;
  simdjson::padded_string json(body.data(), body.size());
  if (json.data() == nullptr) return absl::ResourceExhaustedError("body: out of memory while parsing");
  thread_local od::parser reused(kReusedParserBytes);
  // Sized once to the bound, so that it never reallocates.
  thread_local const bool reused_ok = reused.allocate(kReusedParserBytes) == simdjson::SUCCESS;
  std::unique_ptr<od::parser> own;
  od::parser* parser = &reused;
  if (body.size() > kReusedParserBytes || !reused_ok) {
    own = std::make_unique<od::parser>(body.size());
    parser = own.get();
  }
  od::document doc;
  if (error_code e = parser->iterate(json).get(doc)) return JsonError(e);
  od::object obj;
  if (error_code e = doc.get_object().get(obj)) return JsonError(e);
  return ForEachField(obj, "", fn);
}

bool IsOneOf(std::string_view key, std::span<const std::string_view> keys) {
  for (std::string_view k : keys) {
    if (k == key) return true;
  }
  return false;
}

absl::Status EmptyArrayOnly(od::value& v, std::string_view name, std::string_view why) {
  od::array a;
  if (absl::Status s = GetArray(v, name, "an array", &a); !s.ok()) return s;
  return ForEachElement(a, [&](size_t, od::value&) { return Invalid(Cat(name, ": ", why)); });
}

absl::Status EmptyObjectOnly(od::value& v, std::string_view name, std::string_view why) {
  od::object o;
  if (absl::Status s = GetObject(v, name, "an object", &o); !s.ok()) return s;
  return ForEachField(o, Cat(name, "."), [&](std::string_view, od::value&) { return Invalid(Cat(name, ": ", why)); });
}

absl::Status StringIn(od::value& v, std::string_view name, std::initializer_list<std::string_view> allowed,
                      std::string_view why) {
  std::string_view s;
  if (absl::Status st = ReadString(v, name, &s); !st.ok()) return st;
  for (std::string_view a : allowed) {
    if (s == a) return absl::OkStatus();
  }
  return Invalid(Cat(name, ": ", why, ", got \"", Printable(s), "\""));
}

absl::Status ReadTokenIds(od::array& a, std::string_view name, size_t max_ids, std::vector<int32_t>* out) {
  return ForEachElement(a, [&](size_t j, od::value& e) {
    if (j >= max_ids) return Invalid(Cat(name, ": at most ", max_ids, " token ids"));
    int64_t id = 0;
    if (absl::Status s = ReadInt(e, Cat(name, "[", j, "]"), 0, kMaxTokenId, &id); !s.ok()) return s;
    out->push_back(static_cast<int32_t>(id));
    return absl::OkStatus();
  });
}

}  // namespace phi::gateway
