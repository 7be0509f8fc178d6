#include "services/gateway/openai_request.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <bitset>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "services/common/request_limits.h"
#include "services/gateway/openai_json.h"

namespace phi::gateway {
namespace {

// The bounds shared with the gRPC API and the worker (services/common/request_limits.h).
using common::kMaxConstraintBytes;  // a schema, regex or grammar; guided_choice's strings together
using common::kMaxLogitBias;
using common::kMaxStopTokenIds;
constexpr int64_t kMaxChoices = common::kMaxChoices;  // n, best_of
constexpr int64_t kMaxLogprobs = common::kMaxTopLogprobs;
constexpr size_t kMaxStopBytes = common::kMaxStopStringBytes;  // one stop string
constexpr size_t kMaxGuidedChoices = common::kMaxConstraintChoices;
constexpr double kMaxBias = common::kMaxAbsLogitBias;
constexpr double kMaxPenalty = common::kMaxAbsPenalty;  // presence_penalty, frequency_penalty
// The HTTP API's own bounds.
constexpr int64_t kMaxTokens = int64_t{1} << 24;
constexpr int64_t kMaxTokenId = std::numeric_limits<int32_t>::max();
constexpr size_t kMaxNameBytes = 256;          // model, user
constexpr size_t kMaxDescriptionBytes = 4096;  // response_format.json_schema.description

// ---- structured output and logit_bias ----

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

// A JSON schema given as an object: its text as sent (trimmed). With `in_string`, also a string
// holding one (vLLM's guided_json).
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

// response_format: {"type": "text"} (no constraint) | {"type": "json_object"} |
// {"type": "json_schema", "json_schema": {...}}.
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

// guided_regex, guided_grammar: a non-empty string of at most kMaxConstraintBytes.
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

// guided_choice: 1 to kMaxGuidedChoices non-empty strings, at most kMaxConstraintBytes together.
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

// A logit_bias key: a token id in decimal, as OpenAI's SDKs send it ("50256"); no sign, no
// leading zeros (two spellings of one id would be two entries).
bool ParseTokenIdKey(std::string_view key, int32_t* id) {
  if (key.empty() || key.size() > 10 || (key.size() > 1 && key[0] == '0')) return false;
  int64_t x = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
    x = x * 10 + (c - '0');
  }
  if (x > kMaxTokenId) return false;
  *id = static_cast<int32_t>(x);
  return true;
}

// logit_bias: {"<token id>": bias in [-100, 100], ...}, at most kMaxLogitBias entries. Ids past
// the model's vocabulary are the worker's to refuse (it knows the vocabulary).
absl::Status ReadLogitBias(od::value& v, google::protobuf::Map<int32_t, float>* out) {
  od::object o;
  if (absl::Status s = GetObject(v, "logit_bias", "an object {\"<token id>\": bias in [-100, 100]}", &o); !s.ok()) {
    return s;
  }
  return ForEachField(o, "logit_bias.", [&](std::string_view key, od::value& f) {
    if (out->size() >= kMaxLogitBias) return Invalid(Cat("logit_bias: at most ", kMaxLogitBias, " entries"));
    const std::string name = Cat("logit_bias.", Printable(key));
    int32_t id = 0;
    if (!ParseTokenIdKey(key, &id)) {
      return Invalid(Cat(name, ": the key must be a token id in decimal, in [0, ", kMaxTokenId, "]"));
    }
    double bias = 0;
    if (absl::Status s = ReadNumber(f, name, -kMaxBias, kMaxBias, false, &bias); !s.ok()) return s;
    (*out)[id] = static_cast<float>(bias);
    return absl::OkStatus();
  });
}

// ---- fields shared by the endpoints ----

// For (0, x] fields whose 0 means "unset": a positive double below float's range stays positive.
float PositiveFloat(double d) { return std::max(static_cast<float>(d), std::numeric_limits<float>::min()); }

// Sampling, stopping and streaming fields; Handle() returns false for a key it does not know.
class CommonFields {
 public:
  CommonFields(bool chat, const OpenAiRequestLimits& limits) : chat_(chat), limits_(limits) {}

  absl::StatusOr<bool> Handle(std::string_view key, od::value& v) {
    absl::StatusOr<bool> handled = HandleSampling(key, v);
    if (handled.ok() && !*handled) handled = HandleStopping(key, v);
    if (handled.ok() && !*handled) handled = HandleConstraint(key, v);
    return handled;
  }

  // Checks across fields; fills the defaults.
  absl::Status Finish(int32_t default_max_tokens) {
    if (stream_options_ && !stream_) return Invalid("stream_options: only allowed when stream is true");
    // Absent: left unset, so that the generation sends the served model's default (greedy
    // unless its generation_config.json says do_sample), as transformers does.
    if (temperature_) p_.sampling.set_temperature(static_cast<float>(*temperature_));
    int64_t max_tokens = max_completion_tokens_.value_or(max_tokens_.value_or(default_max_tokens));
    p_.stopping.set_max_new_tokens(static_cast<int32_t>(max_tokens));
    // max_tokens 0 on chat: the generation resolves it (the model's default), min_tokens checked there.
    if (min_tokens_ > max_tokens && (max_tokens > 0 || !chat_)) {
      return Invalid(
          Cat("min_tokens: must be an integer in [0, max_tokens] = [0, ", max_tokens, "], got ", min_tokens_));
    }
    p_.stopping.set_min_new_tokens(static_cast<int32_t>(min_tokens_));
    const int64_t n = n_.value_or(1);
    if (best_of_ && *best_of_ < n) {
      return Invalid(Cat("best_of: must be an integer in [n, ", kMaxChoices, "] = [", n, ", ", kMaxChoices, "], got ",
                         *best_of_));
    }
    const int64_t best_of = best_of_.value_or(n);
    if (best_of > n && stream_) return Invalid(Cat("best_of: must equal n (", n, ") when stream is true"));
    p_.n = static_cast<int32_t>(n);
    p_.best_of = static_cast<int32_t>(best_of);
    p_.stream = stream_;
    return absl::OkStatus();
  }

  GenerateParams& params() { return p_; }
  bool stream() const { return stream_; }
  bool include_usage() const { return include_usage_; }
  std::optional<int64_t> max_tokens() const { return max_tokens_; }
  const std::string& constraint_param() const { return constraint_param_; }

 private:
  absl::StatusOr<bool> HandleSampling(std::string_view key, od::value& v) {
    auto& s = p_.sampling;
    double d = 0;
    int64_t i = 0;
    absl::Status st;
    if (key == "model") {
      st = ReadBoundedString(v, key, kMaxNameBytes, &p_.model);
    } else if (key == "user") {
      std::string user;  // OpenAI's end-user id: checked, not used
      st = ReadBoundedString(v, key, kMaxNameBytes, &user);
    } else if (key == "temperature") {
      if ((st = ReadNumber(v, key, 0, common::kMaxTemperature, false, &d)).ok()) temperature_ = d;
    } else if (key == "top_p") {
      d = std::numeric_limits<double>::quiet_NaN();
      st = ReadNumber(v, key, 0, common::kMaxTopP, true, &d);
      // OpenAI takes 0 as "only the top token"; here it is refused rather than read as unset.
      if (!st.ok() && d == 0) st = Invalid(Cat(st.message(), " (use temperature 0 for greedy)"));
      if (st.ok()) s.set_top_p(PositiveFloat(d));
    } else if (key == "top_k") {
      // -1 (vLLM) and 0: off.
      if ((st = ReadInt(v, key, -1, kMaxTokenId, &i)).ok()) s.set_top_k(i < 0 ? 0 : static_cast<int32_t>(i));
    } else if (key == "min_p") {
      if ((st = ReadNumber(v, key, 0, common::kMaxMinP, false, &d)).ok()) s.set_min_p(static_cast<float>(d));
    } else if (key == "repetition_penalty") {
      st = ReadNumber(v, key, 0, common::kMaxRepetitionPenalty, true, &d);
      if (st.ok()) s.set_repetition_penalty(PositiveFloat(d));
    } else if (key == "presence_penalty") {
      st = ReadNumber(v, key, -kMaxPenalty, kMaxPenalty, false, &d);
      if (st.ok()) s.set_presence_penalty(static_cast<float>(d));
    } else if (key == "frequency_penalty") {
      st = ReadNumber(v, key, -kMaxPenalty, kMaxPenalty, false, &d);
      if (st.ok()) s.set_frequency_penalty(static_cast<float>(d));
    } else if (key == "seed") {
      st = ReadInt(v, key, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &i);
      if (st.ok()) s.set_seed(static_cast<uint64_t>(i));  // negative seeds keep their bits
    } else if (key == "n") {
      if ((st = ReadInt(v, key, 1, kMaxChoices, &i)).ok()) n_ = i;
    } else if (key == "best_of") {
      if ((st = ReadInt(v, key, 1, kMaxChoices, &i)).ok()) best_of_ = i;
    } else if (key == "logit_bias") {
      st = ReadLogitBias(v, s.mutable_logit_bias());
    } else {
      return false;
    }
    if (!st.ok()) return st;
    return true;
  }

  absl::StatusOr<bool> HandleStopping(std::string_view key, od::value& v) {
    int64_t i = 0;
    bool b = false;
    absl::Status st;
    if (key == "max_tokens") {
      if ((st = ReadInt(v, key, chat_ ? 1 : 0, kMaxTokens, &i)).ok()) max_tokens_ = i;
    } else if (key == "max_completion_tokens" && chat_) {
      if ((st = ReadInt(v, key, 1, kMaxTokens, &i)).ok()) max_completion_tokens_ = i;
    } else if (key == "min_tokens") {
      if ((st = ReadInt(v, key, 0, kMaxTokens, &i)).ok()) min_tokens_ = i;
    } else if (key == "stop") {
      st = ReadStop(v);
    } else if (key == "stop_token_ids") {
      st = ReadStopTokenIds(v);
    } else if (key == "include_stop_str_in_output") {
      if ((st = ReadBool(v, key, &b)).ok()) p_.stopping.set_include_stop_str_in_output(b);
    } else if (key == "ignore_eos") {
      if ((st = ReadBool(v, key, &b)).ok()) p_.stopping.set_ignore_eos(b);
    } else if (key == "stream") {
      st = ReadBool(v, key, &stream_);
    } else if (key == "stream_options") {
      st = ReadStreamOptions(v);
    } else {
      return false;
    }
    if (!st.ok()) return st;
    return true;
  }

  // response_format and vLLM's guided_* extras: at most one constraint per request.
  absl::StatusOr<bool> HandleConstraint(std::string_view key, od::value& v) {
    phi::v1::Constraint c;
    absl::Status st;
    if (key == "response_format") {
      st = ReadResponseFormat(v, limits_.max_schema_depth, &c);
    } else if (key == "guided_json") {
      st = ReadSchema(v, key, limits_.max_schema_depth, /*in_string=*/true, c.mutable_json_schema());
    } else if (key == "guided_regex") {
      st = ReadConstraintText(v, key, c.mutable_regex());
    } else if (key == "guided_grammar") {
      st = ReadConstraintText(v, key, c.mutable_grammar());
    } else if (key == "guided_choice") {
      st = ReadGuidedChoice(v, c.mutable_choice());
    } else if (key == "guided_whitespace_pattern") {
      // JSON output is compact (Constraint.any_whitespace false); no other pattern.
      st = Invalid("guided_whitespace_pattern: not supported (only null): JSON output has no whitespace");
    } else {
      return false;
    }
    if (!st.ok()) return st;
    if (c.kind_case() == phi::v1::Constraint::KIND_NOT_SET) return true;  // response_format text
    if (!constraint_param_.empty()) {
      return Invalid(Cat(key, ": only one of response_format (json_object, json_schema), guided_json, guided_regex, "
                              "guided_grammar, guided_choice per request; ",
                         constraint_param_, " is given too"));
    }
    constraint_param_ = std::string(key);
    *p_.sampling.mutable_constraint() = std::move(c);
    return true;
  }

  absl::Status ReadStop(od::value& v) {
    od::json_type t = od::json_type::null;
    if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
    auto one = [&](std::string_view name, od::value& e) {
      std::string_view s;
      if (absl::Status st = ReadString(e, name, &s); !st.ok()) return st;
      if (s.empty() || s.size() > kMaxStopBytes) {
        return Invalid(
            Cat(name, ": must be a non-empty string of at most ", kMaxStopBytes, " bytes, got ", s.size(), " bytes"));
      }
      p_.stopping.add_stop(std::string(s));
      return absl::OkStatus();
    };
    if (t == od::json_type::string) return one("stop", v);
    if (t != od::json_type::array) return WrongType("stop", "a string or an array of strings", t);
    od::array a;
    if (error_code e = v.get_array().get(a)) return JsonError(e);
    return ForEachElement(a, [&](size_t i, od::value& e) {
      if (i >= limits_.max_stop) return Invalid(Cat("stop: at most ", limits_.max_stop, " strings"));
      return one(Cat("stop[", i, "]"), e);
    });
  }

  absl::Status ReadStopTokenIds(od::value& v) {
    od::array a;
    if (absl::Status s = GetArray(v, "stop_token_ids", "an array of token ids", &a); !s.ok()) return s;
    return ForEachElement(a, [&](size_t i, od::value& e) {
      if (i >= kMaxStopTokenIds) return Invalid(Cat("stop_token_ids: at most ", kMaxStopTokenIds, " ids"));
      int64_t id = 0;
      if (absl::Status s = ReadInt(e, Cat("stop_token_ids[", i, "]"), 0, kMaxTokenId, &id); !s.ok()) return s;
      p_.stopping.add_stop_token_ids(static_cast<int32_t>(id));
      return absl::OkStatus();
    });
  }

  absl::Status ReadStreamOptions(od::value& v) {
    od::object o;
    if (absl::Status s = GetObject(v, "stream_options", "an object", &o); !s.ok()) return s;
    stream_options_ = true;
    return ForEachField(o, "stream_options.", [&](std::string_view key, od::value& f) {
      if (key != "include_usage") return Unknown("stream_options.", key);
      bool is_null = false;
      if (absl::Status s = ConsumeIfNull(f, &is_null); !s.ok() || is_null) return s;
      return ReadBool(f, "stream_options.include_usage", &include_usage_);
    });
  }

  const bool chat_;
  const OpenAiRequestLimits& limits_;
  GenerateParams p_;
  std::optional<double> temperature_;
  std::optional<int64_t> max_tokens_, max_completion_tokens_, n_, best_of_;
  int64_t min_tokens_ = 0;
  std::string constraint_param_;
  bool stream_ = false, stream_options_ = false, include_usage_ = false;
};

// An empty array or null is the only accepted value (tools, functions).
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

// A string from `allowed`.
absl::Status StringIn(od::value& v, std::string_view name, std::initializer_list<std::string_view> allowed,
                      std::string_view why) {
  std::string_view s;
  if (absl::Status st = ReadString(v, name, &s); !st.ok()) return st;
  for (std::string_view a : allowed) {
    if (s == a) return absl::OkStatus();
  }
  return Invalid(Cat(name, ": ", why, ", got \"", Printable(s), "\""));
}

// Chat parameters we do not implement, accepted only at their neutral value.
absl::StatusOr<bool> HandleChatNeutral(std::string_view key, od::value& v) {
  absl::Status st;
  if (key == "tools") {
    st = EmptyArrayOnly(v, key, "not supported yet (only [] or null)");
  } else if (key == "functions") {
    st = EmptyArrayOnly(v, key, "not supported yet (only [] or null)");
  } else if (key == "tool_choice" || key == "function_call") {
    od::json_type t = od::json_type::null;
    if (!(st = TypeOf(v, &t)).ok()) return st;
    // With no tools, "none" and "auto" mean the same thing: a plain answer.
    if (t != od::json_type::string) {
      st = Invalid(Cat(key, ": only \"none\", \"auto\" or null (tools are not supported yet), got ", KindName(t)));
    } else {
      st = StringIn(v, key, {"none", "auto"}, "only \"none\", \"auto\" or null (tools are not supported yet)");
    }
  } else if (key == "parallel_tool_calls") {
    bool b = false;
    st = ReadBool(v, key, &b);
  } else if (key == "service_tier") {
    st = StringIn(v, key, {"auto", "default"}, "only \"auto\" or \"default\" is supported");
  } else if (key == "store") {
    bool b = false;
    if ((st = ReadBool(v, key, &b)).ok() && b) st = Invalid("store: true is not supported (stored completions)");
  } else if (key == "metadata") {
    st = EmptyObjectOnly(v, key, "not supported (only {} or null)");
  } else if (key == "modalities") {
    od::array a;
    if (!(st = GetArray(v, key, "an array [\"text\"]", &a)).ok()) return st;
    size_t count = 0;
    st = ForEachElement(a, [&](size_t i, od::value& e) {
      ++count;
      if (i > 0) return Invalid("modalities: only [\"text\"] is supported");
      return StringIn(e, "modalities[0]", {"text"}, "only \"text\" is supported");
    });
    if (st.ok() && count == 0) st = Invalid("modalities: only [\"text\"] is supported, got []");
  } else {
    return false;
  }
  if (!st.ok()) return st;
  return true;
}

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

// messages[]: into ChatMessages (roles resolved; developer is system).
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

// One id list of a completions prompt or /detokenize.
absl::Status ReadIds(od::array& a, std::string_view name, size_t max_ids, std::vector<int32_t>* out) {
  return ForEachElement(a, [&](size_t j, od::value& e) {
    if (j >= max_ids) return Invalid(Cat(name, ": at most ", max_ids, " token ids"));
    int64_t id = 0;
    if (absl::Status s = ReadInt(e, Cat(name, "[", j, "]"), 0, kMaxTokenId, &id); !s.ok()) return s;
    out->push_back(static_cast<int32_t>(id));
    return absl::OkStatus();
  });
}

struct RawPrompt {
  std::string text;  // when ids is empty
  std::vector<int32_t> ids;
};

// Completions' prompt: a string, strings, token ids (one prompt), or arrays of token ids;
// never mixed, never empty.
absl::Status ReadPrompts(od::value& v, const OpenAiRequestLimits& limits, std::vector<RawPrompt>* out) {
  constexpr std::string_view kWant =
      "a string, an array of strings, an array of token ids or an array of arrays of token ids";
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  if (t == od::json_type::string) {
    std::string_view text;
    if (absl::Status s = ReadString(v, "prompt", &text); !s.ok()) return s;
    if (text.empty()) return Invalid("prompt: must not be empty");
    out->push_back({std::string(text), {}});
    return absl::OkStatus();
  }
  if (t != od::json_type::array) return WrongType("prompt", kWant, t);
  od::array a;
  if (error_code e = v.get_array().get(a)) return JsonError(e);
  od::json_type first = od::json_type::null;
  absl::Status st = ForEachElement(a, [&](size_t i, od::value& e) -> absl::Status {
    const std::string at = Cat("prompt[", i, "]");
    od::json_type et = od::json_type::null;
    if (absl::Status s = TypeOf(e, &et); !s.ok()) return s;
    if (i == 0) {
      if (et != od::json_type::string && et != od::json_type::number && et != od::json_type::array) {
        return WrongType(at, "a string, a token id or an array of token ids", et);
      }
      first = et;
      if (et == od::json_type::number) out->emplace_back();
    }
    if (first == od::json_type::number) {  // one prompt of ids
      if (i >= limits.max_prompt_token_ids) {
        return Invalid(Cat("prompt: at most ", limits.max_prompt_token_ids, " token ids"));
      }
      int64_t id = 0;
      if (et != od::json_type::number) return WrongType(at, "a token id like prompt[0]", et);
      if (absl::Status s = ReadInt(e, at, 0, kMaxTokenId, &id); !s.ok()) return s;
      out->back().ids.push_back(static_cast<int32_t>(id));
      return absl::OkStatus();
    }
    if (i >= limits.max_prompts) return Invalid(Cat("prompt: at most ", limits.max_prompts, " prompts"));
    if (first == od::json_type::string) {
      if (et != od::json_type::string) return WrongType(at, "a string like prompt[0]", et);
      std::string_view text;
      if (absl::Status s = ReadString(e, at, &text); !s.ok()) return s;
      if (text.empty()) return Invalid(Cat(at, ": must not be empty"));
      out->push_back({std::string(text), {}});
      return absl::OkStatus();
    }
    if (et != od::json_type::array) return WrongType(at, "an array of token ids like prompt[0]", et);
    od::array ids;
    if (error_code err = e.get_array().get(ids)) return JsonError(err);
    out->emplace_back();
    if (absl::Status s = ReadIds(ids, at, limits.max_prompt_token_ids, &out->back().ids); !s.ok()) return s;
    if (out->back().ids.empty()) return Invalid(Cat(at, ": must not be empty"));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  if (out->empty()) return Invalid("prompt: must not be empty");
  return absl::OkStatus();
}

// The parameters of each endpoint (anything else: 400 "unknown parameter").
// clang-format off
constexpr std::string_view kSharedKeys[] = {
    "model", "user", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
    "frequency_penalty", "seed", "n", "best_of", "max_tokens", "min_tokens", "stop", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "stream", "stream_options", "logit_bias", "response_format",
    "guided_json", "guided_regex", "guided_grammar", "guided_choice", "guided_whitespace_pattern"};
constexpr std::string_view kChatOnlyKeys[] = {
    "messages", "logprobs", "top_logprobs", "max_completion_tokens", "tools", "functions", "tool_choice",
    "function_call", "parallel_tool_calls", "service_tier", "store", "metadata", "modalities"};
constexpr std::string_view kCompletionOnlyKeys[] = {"prompt", "echo", "logprobs", "suffix"};
// clang-format on

struct KeySet {
  std::span<const std::string_view> shared, own;
};
constexpr KeySet kChatKeys{kSharedKeys, kChatOnlyKeys};
constexpr KeySet kCompletionKeys{kSharedKeys, kCompletionOnlyKeys};

bool Known(const KeySet& keys, std::string_view key) {
  for (std::string_view k : keys.shared) {
    if (k == key) return true;
  }
  for (std::string_view k : keys.own) {
    if (k == key) return true;
  }
  return false;
}

// The completions endpoint's own fields (prompt, echo, logprobs, suffix).
struct CompletionOnlyFields {
  std::vector<RawPrompt> prompts;
  bool has_prompt = false;
  bool echo = false;
  std::optional<int64_t> logprobs;

  // false: not one of them.
  absl::StatusOr<bool> Handle(std::string_view key, od::value& v, const OpenAiRequestLimits& limits) {
    absl::Status st;
    if (key == "prompt") {
      has_prompt = true;
      st = ReadPrompts(v, limits, &prompts);
    } else if (key == "echo") {
      st = ReadBool(v, key, &echo);
    } else if (key == "logprobs") {
      int64_t lp = 0;
      if ((st = ReadInt(v, key, 0, kMaxLogprobs, &lp)).ok()) logprobs = lp;
    } else if (key == "suffix") {
      std::string_view text;
      if ((st = ReadString(v, key, &text)).ok() && !text.empty()) {
        st = Invalid("suffix: not supported (only \"\" or null)");
      }
    } else {
      return false;
    }
    if (!st.ok()) return st;
    return true;
  }
};

// One GenerateParams per prompt, each a copy of `base` with its prompt (text or ids).
std::vector<GenerateParams> ExpandPrompts(std::vector<RawPrompt>& prompts, const GenerateParams& base, bool echo) {
  std::vector<GenerateParams> out;
  out.reserve(prompts.size());
  for (RawPrompt& raw : prompts) {
    GenerateParams& p = out.emplace_back(base);
    if (raw.ids.empty()) {
      if (echo) p.echo_text = raw.text;
      p.prompt.set_text(std::move(raw.text));
      p.parse_special = true;
    } else {
      p.prompt_ids = std::move(raw.ids);
    }
    // echo + logprobs: prompt logprobs are part of the answer (lm-eval scoring).
    p.prompt_logprobs = echo && p.logprobs;
  }
  return out;
}

}  // namespace

absl::StatusOr<ChatCompletionRequest> ParseChatCompletionRequest(std::string_view body, const ChatmlOptions& chatml,
                                                                 const OpenAiRequestLimits& limits) {
  CommonFields common(/*chat=*/true, limits);
  GenerateParams& p = common.params();
  google::protobuf::RepeatedPtrField<phi::v1::ChatMessage> messages;
  bool has_messages = false, logprobs = false;
  int64_t top_logprobs = 0;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    if (!Known(kChatKeys, key)) return Unknown("", key);
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok() || is_null) return s;  // null = absent
    if (key == "messages") {
      has_messages = true;
      return ReadMessages(v, limits, &messages);
    }
    if (key == "logprobs") return ReadBool(v, key, &logprobs);
    if (key == "top_logprobs") return ReadInt(v, key, 0, kMaxLogprobs, &top_logprobs);
    absl::StatusOr<bool> handled = common.Handle(key, v);
    if (handled.ok() && !*handled) handled = HandleChatNeutral(key, v);
    if (!handled.ok()) return handled.status();
    return *handled ? absl::OkStatus() : Unknown("", key);
  });
  if (!st.ok()) return st;
  if (!has_messages) return Invalid("messages: required, a non-empty array of {role, content}");
  if (absl::Status s = common.Finish(/*default_max_tokens=*/0); !s.ok()) return s;  // 0: the model's default
  absl::StatusOr<phi::v1::SegmentList> segs = RenderChatml(messages, chatml);
  if (!segs.ok()) return segs.status();
  *p.prompt.mutable_segments() = std::move(*segs);
  p.logprobs = logprobs || top_logprobs > 0;
  p.top_logprobs = static_cast<int32_t>(top_logprobs);
  ChatCompletionRequest out;
  out.stream = common.stream();
  out.include_usage = common.include_usage();
  out.constraint_param = common.constraint_param();
  out.params = std::move(p);
  return out;
}

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body, const OpenAiRequestLimits& limits) {
  CommonFields common(/*chat=*/false, limits);
  CompletionOnlyFields own;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    if (!Known(kCompletionKeys, key)) return Unknown("", key);
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok() || is_null) return s;  // null = absent
    absl::StatusOr<bool> handled = own.Handle(key, v, limits);
    if (handled.ok() && !*handled) handled = common.Handle(key, v);
    if (!handled.ok()) return handled.status();
    return *handled ? absl::OkStatus() : Unknown("", key);
  });
  if (!st.ok()) return st;
  if (!own.has_prompt) return Invalid("prompt: required (a string, strings or token ids)");
  const bool score_only = common.max_tokens() == 0;
  if (score_only && !own.echo) return Invalid("max_tokens: 0 is allowed only with echo (scoring the prompt)");
  // OpenAI's default max_tokens for completions is 16.
  if (absl::Status s = common.Finish(/*default_max_tokens=*/16); !s.ok()) return s;
  GenerateParams& base = common.params();
  if (score_only && (base.n > 1 || base.best_of > 1)) {
    return Invalid(Cat(base.n > 1 ? "n" : "best_of", ": must be 1 with max_tokens 0 (scoring the prompt)"));
  }
  if (score_only) base.stopping.set_max_new_tokens(1);
  if (own.logprobs) {
    base.logprobs = true;
    base.top_logprobs = static_cast<int32_t>(*own.logprobs);
  }
  CompletionRequest out;
  out.model = base.model;
  out.stream = common.stream();
  out.include_usage = common.include_usage();
  out.echo = own.echo;
  out.score_only = score_only;
  out.constraint_param = common.constraint_param();
  out.prompts = ExpandPrompts(own.prompts, base, own.echo);
  return out;
}

absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(std::string_view body, const ChatmlOptions& chatml,
                                                     const OpenAiRequestLimits& limits) {
  TokenizeRequest out;
  std::optional<std::string> prompt;
  google::protobuf::RepeatedPtrField<phi::v1::ChatMessage> messages;
  bool has_messages = false, add_generation_prompt = true, add_special_given = false, add_gen_given = false;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok()) return s;
    if (key != "model" && key != "prompt" && key != "messages" && key != "add_special_tokens" &&
        key != "add_generation_prompt" && key != "return_token_strs") {
      return Unknown("", key);
    }
    if (is_null) return absl::OkStatus();
    if (key == "model") return ReadBoundedString(v, key, kMaxNameBytes, &out.model);
    if (key == "prompt") {
      std::string_view s;
      if (absl::Status r = ReadString(v, key, &s); !r.ok()) return r;
      prompt = std::string(s);
      return absl::OkStatus();
    }
    if (key == "messages") {
      has_messages = true;
      return ReadMessages(v, limits, &messages);
    }
    if (key == "add_special_tokens") {
      add_special_given = true;
      return ReadBool(v, key, &out.parse_special);
    }
    if (key == "add_generation_prompt") {
      add_gen_given = true;
      return ReadBool(v, key, &add_generation_prompt);
    }
    return ReadBool(v, key, &out.return_token_strs);
  });
  if (!st.ok()) return st;
  if (prompt.has_value() == has_messages) return Invalid("prompt: exactly one of prompt or messages is required");
  if (prompt) {
    if (add_gen_given) return Invalid("add_generation_prompt: only with messages");
    out.prompt.set_text(std::move(*prompt));
    return out;
  }
  if (add_special_given) return Invalid("add_special_tokens: only with prompt");
  absl::StatusOr<phi::v1::SegmentList> segs = RenderChatml(messages, chatml);
  if (!segs.ok()) return segs.status();
  // RenderChatml ends with the generation prompt: <|im_start|> "assistant\n".
  if (!add_generation_prompt && segs->segments_size() >= 2) {
    segs->mutable_segments()->DeleteSubrange(segs->segments_size() - 2, 2);
  }
  *out.prompt.mutable_segments() = std::move(*segs);
  out.parse_special = false;
  return out;
}

absl::StatusOr<DetokenizeRequest> ParseDetokenizeRequest(std::string_view body, const OpenAiRequestLimits& limits) {
  DetokenizeRequest out;
  bool has_tokens = false;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok()) return s;
    if (key != "model" && key != "tokens") return Unknown("", key);
    if (is_null) return absl::OkStatus();
    if (key == "model") return ReadBoundedString(v, key, kMaxNameBytes, &out.model);
    has_tokens = true;
    od::array a;
    if (absl::Status s = GetArray(v, "tokens", "an array of token ids", &a); !s.ok()) return s;
    return ReadIds(a, "tokens", limits.max_prompt_token_ids, &out.tokens);
  });
  if (!st.ok()) return st;
  if (!has_tokens) return Invalid("tokens: required, an array of token ids");
  return out;
}

absl::Status ClientFieldError(const absl::Status& status, std::string_view constraint_param) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  std::string_view m(status.message().data(), status.message().size());
  struct Rename {
    std::string_view field, param;
  };
  const Rename renames[] = {{"sampling.constraint.", constraint_param},
                            {"sampling.constraint", constraint_param},
                            {"sampling.logit_bias", "logit_bias"},
                            {"stopping.min_new_tokens", "min_tokens"},
                            {"stopping.include_stop_str_in_output", "include_stop_str_in_output"}};
  for (const Rename& r : renames) {
    // The field starts the message or follows a context such as "worker group h:p: ".
    size_t at = m.find(r.field);
    if (at == std::string_view::npos || r.param.empty() || (at > 0 && m[at - 1] != ' ')) continue;
    std::string_view rest = m.substr(at + r.field.size());
    std::string name(r.param);
    if (r.field.back() == '.') {  // the constraint's kind: "json_schema: ...", "choice.choices[3]: ..."
      const size_t colon = rest.find(':');
      if (colon == std::string_view::npos) continue;
      constexpr std::string_view kChoices = "choice.choices";
      if (rest.substr(0, kChoices.size()) == kChoices) name += rest.substr(kChoices.size(), colon - kChoices.size());
      rest = rest.substr(colon);
    }
    if (r.param == "logit_bias" && !rest.empty() && rest[0] == '[') {  // [50256] -> .50256
      const size_t close = rest.find(']');
      if (close != std::string_view::npos) {
        name = Cat(name, ".", rest.substr(1, close - 1));
        rest = rest.substr(close + 1);
      }
    }
    if (rest.empty() || rest[0] != ':') continue;
    return Invalid(Cat(name, rest));
  }
  return status;
}

}  // namespace phi::gateway
