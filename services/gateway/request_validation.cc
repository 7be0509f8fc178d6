#include "services/gateway/request_validation.h"

#include <cmath>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/common/request_limits.h"

namespace phi::gateway {

namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

using common::kMaxAbsLogitBias;
using common::kMaxAbsPenalty;
using common::kMaxChoices;
using common::kMaxConstraintBytes;
using common::kMaxConstraintChoices;
using common::kMaxLogitBias;
using common::kMaxMinP;
using common::kMaxRepetitionPenalty;
using common::kMaxStopStringBytes;
using common::kMaxStopStrings;
using common::kMaxStopTokenIds;
using common::kMaxTemperature;
using common::kMaxTopLogprobs;
using common::kMaxTopP;

// Where a JSON text stops parsing (nlohmann's SAX interface: no exception, no document built).
struct JsonErrorFinder : nlohmann::json::json_sax_t {
  bool null() override { return Value('v'); }
  bool boolean(bool) override { return Value('b'); }
  bool number_integer(number_integer_t) override { return Value('v'); }
  bool number_unsigned(number_unsigned_t) override { return Value('v'); }
  bool number_float(number_float_t, const string_t&) override { return Value('v'); }
  bool string(string_t&) override { return Value('v'); }
  bool binary(binary_t&) override { return Value('v'); }
  bool start_object(std::size_t) override { return Open('{'); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open('['); }
  bool end_array() override { return Close(); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::json::exception& e) override {
    failed = true;
    offset = position;
    what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 9: syntax error ...": the
    // part after the position, which the caller reports as a byte offset.
    if (size_t at = what.find(": "); at != std::string::npos) what = what.substr(at + 2);
    return false;
  }
  bool Value(char kind) {
    if (depth == 0) top = kind;
    return true;
  }
  bool Open(char kind) {
    Value(kind);
    ++depth;
    return true;
  }
  bool Close() {
    --depth;
    return true;
  }
  int depth = 0;
  char top = 0;  // the document's kind: '{' object, '[' array, 'b' boolean, 'v' another value
  bool failed = false;
  size_t offset = 0;
  std::string what;
};

absl::Status ValidateJsonSchema(const std::string& text) {
  const char* field = "sampling.constraint.json_schema";
  JsonErrorFinder finder;
  nlohmann::json::sax_parse(text, &finder);
  if (finder.failed) {
    // nlohmann counts the bytes read, the bad one included.
    const size_t offset = finder.offset > 0 ? finder.offset - 1 : 0;
    return Invalid(absl::StrCat(field, ": not JSON at offset ", offset, ": ", finder.what));
  }
  if (finder.top != '{' && finder.top != 'b') {
    return Invalid(absl::StrCat(field, ": a schema is a JSON object (or true or false)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateConstraint(const phi::v1::Constraint& c) {
  auto text_ok = [](const char* field, const std::string& t) -> absl::Status {
    if (t.empty()) return Invalid(absl::StrCat("sampling.constraint.", field, ": empty"));
    if (t.size() > kMaxConstraintBytes) {
      return Invalid(
          absl::StrCat("sampling.constraint.", field, ": ", t.size(), " bytes, at most ", kMaxConstraintBytes));
    }
    return absl::OkStatus();
  };
  switch (c.kind_case()) {
    case phi::v1::Constraint::kJsonSchema:
      if (absl::Status s = text_ok("json_schema", c.json_schema()); !s.ok()) return s;
      return ValidateJsonSchema(c.json_schema());
    case phi::v1::Constraint::kRegex:
      return text_ok("regex", c.regex());
    case phi::v1::Constraint::kGrammar:
      return text_ok("grammar", c.grammar());
    case phi::v1::Constraint::kChoice: {
      const auto& choices = c.choice().choices();
      if (choices.empty() || static_cast<size_t>(choices.size()) > kMaxConstraintChoices) {
        return Invalid(absl::StrCat("sampling.constraint.choice.choices: ", choices.size(), " strings, 1 to ",
                                    kMaxConstraintChoices));
      }
      for (int i = 0; i < choices.size(); ++i) {
        if (choices[i].size() > kMaxConstraintBytes) {
          return Invalid(absl::StrCat("sampling.constraint.choice.choices[", i, "]: ", choices[i].size(),
                                      " bytes, at most ", kMaxConstraintBytes));
        }
      }
      return absl::OkStatus();
    }
    case phi::v1::Constraint::kJsonObject:
    case phi::v1::Constraint::KIND_NOT_SET:
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// The value, or its absence, as the message names it: "sampling.top_p: 1.5 is outside (0, 1]".
absl::Status OutOfRange(const std::string& field, double value, const std::string& range) {
  return Invalid(absl::StrCat(field, ": ", value, " is outside ", range));
}

// The bounds on logit_bias that hold whatever the model: its size, sign of ids, bias values.
absl::Status ValidateLogitBias(const google::protobuf::Map<int32_t, float>& logit_bias) {
  if (static_cast<size_t>(logit_bias.size()) > kMaxLogitBias) {
    return Invalid(absl::StrCat("sampling.logit_bias: ", logit_bias.size(), " entries, at most ", kMaxLogitBias));
  }
  // Sorted, so that the first bad entry reported does not depend on the map's order. The
  // upper bound of the ids is the model's vocabulary (checked where it is known).
  const std::map<int32_t, float> bias(logit_bias.begin(), logit_bias.end());
  for (const auto& [id, value] : bias) {
    if (id < 0) return Invalid(absl::StrCat("sampling.logit_bias[", id, "]: negative token id (range [0, vocab))"));
    if (!InRange(value, -kMaxAbsLogitBias, kMaxAbsLogitBias)) {
      return OutOfRange(absl::StrCat("sampling.logit_bias[", id, "]"), value,
                        absl::StrCat("[", -kMaxAbsLogitBias, ", ", kMaxAbsLogitBias, "]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// top_p, top_k and repetition_penalty 0 mean the model's default (the worker fills it in).
absl::Status ValidateSampling(const phi::v1::SamplingParams& s) {
  if (!InRange(s.temperature(), 0, kMaxTemperature)) {
    return OutOfRange("sampling.temperature", s.temperature(), absl::StrCat("[0, ", kMaxTemperature, "]"));
  }
  if (!InRange(s.top_p(), 0, kMaxTopP)) {
    return OutOfRange("sampling.top_p", s.top_p(), absl::StrCat("(0, ", kMaxTopP, "]"));
  }
  if (s.top_k() < 0) return Invalid(absl::StrCat("sampling.top_k: ", s.top_k(), " is negative (0 means off)"));
  if (!InRange(s.min_p(), 0, kMaxMinP)) {
    return OutOfRange("sampling.min_p", s.min_p(), absl::StrCat("[0, ", kMaxMinP, "]"));
  }
  if (!InRange(s.repetition_penalty(), 0, kMaxRepetitionPenalty)) {
    return OutOfRange("sampling.repetition_penalty", s.repetition_penalty(),
                      absl::StrCat("(0, ", kMaxRepetitionPenalty, "] (0: the model's default)"));
  }
  const std::string penalty_range = absl::StrCat("[", -kMaxAbsPenalty, ", ", kMaxAbsPenalty, "]");
  if (!InRange(s.presence_penalty(), -kMaxAbsPenalty, kMaxAbsPenalty)) {
    return OutOfRange("sampling.presence_penalty", s.presence_penalty(), penalty_range);
  }
  if (!InRange(s.frequency_penalty(), -kMaxAbsPenalty, kMaxAbsPenalty)) {
    return OutOfRange("sampling.frequency_penalty", s.frequency_penalty(), penalty_range);
  }
  if (absl::Status st = ValidateLogitBias(s.logit_bias()); !st.ok()) return st;
  if (s.has_constraint()) return ValidateConstraint(s.constraint());
  return absl::OkStatus();
}

absl::Status ValidateStopping(const phi::v1::StoppingCriteria& s) {
  if (s.max_new_tokens() < 0) {
    return Invalid(absl::StrCat("stopping.max_new_tokens: ", s.max_new_tokens(),
                                " is negative (0 means the model's default)"));
  }
  if (static_cast<size_t>(s.stop_size()) > kMaxStopStrings) {
    return Invalid(absl::StrCat("stopping.stop: ", s.stop_size(), " strings, at most ", kMaxStopStrings));
  }
  for (int i = 0; i < s.stop_size(); ++i) {
    if (s.stop(i).empty()) return Invalid(absl::StrCat("stopping.stop[", i, "]: empty"));
    if (s.stop(i).size() > kMaxStopStringBytes) {
      return Invalid(
          absl::StrCat("stopping.stop[", i, "]: ", s.stop(i).size(), " bytes, at most ", kMaxStopStringBytes));
    }
  }
  if (static_cast<size_t>(s.stop_token_ids_size()) > kMaxStopTokenIds) {
    return Invalid(
        absl::StrCat("stopping.stop_token_ids: ", s.stop_token_ids_size(), " ids, at most ", kMaxStopTokenIds));
  }
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    if (s.stop_token_ids(i) < 0) return Invalid(absl::StrCat("stopping.stop_token_ids[", i, "]: negative id"));
  }
  // max_new_tokens 0 takes the default later (Generation checks the bound against it then).
  if (s.min_new_tokens() < 0 || (s.max_new_tokens() > 0 && s.min_new_tokens() > s.max_new_tokens())) {
    return Invalid(absl::StrCat("stopping.min_new_tokens: ", s.min_new_tokens(), " is outside [0, max_new_tokens",
                                s.max_new_tokens() > 0 ? absl::StrCat(" = ", s.max_new_tokens()) : "", "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCommon(const GenerateParams& p) {
  if (p.request_id.size() > common::kMaxRequestIdBytes) {
    return Invalid(
        absl::StrCat("request_id: ", p.request_id.size(), " bytes, at most ", common::kMaxRequestIdBytes));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs) {
    return OutOfRange("top_logprobs", p.top_logprobs, absl::StrCat("[0, ", kMaxTopLogprobs, "]"));
  }
  if (p.n < 0 || p.n > kMaxChoices) return OutOfRange("n", p.n, absl::StrCat("[1, ", kMaxChoices, "]"));
  const int32_t n = std::max(p.n, 1);
  if (p.best_of != 0 && (p.best_of < n || p.best_of > kMaxChoices)) {
    return OutOfRange("best_of", p.best_of, absl::StrCat("[n, ", kMaxChoices, "] = [", n, ", ", kMaxChoices, "]"));
  }
  if (p.stream && p.best_of > n) {
    return Invalid(absl::StrCat("best_of: ", p.best_of, " > n = ", n,
                                " needs the whole choices before any is returned: not with streaming"));
  }
  if (absl::Status s = ValidateSampling(p.sampling); !s.ok()) return s;
  return ValidateStopping(p.stopping);
}

}  // namespace phi::gateway
