#include "services/gateway/openai_generation_fields.h"

#include <simdjson.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "services/gateway/openai_request_bounds.h"
#include "services/gateway/openai_structured_output.h"

namespace phi::gateway {
namespace {

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

// For (0, x] fields whose 0 means "unset": a positive double below float's range stays positive.
float PositiveFloat(double d) { return std::max(static_cast<float>(d), std::numeric_limits<float>::min()); }

// clang-format off
constexpr std::string_view kGenerationKeys[] = {
    "model", "user", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
    "frequency_penalty", "seed", "n", "best_of", "max_tokens", "min_tokens", "stop", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "stream", "stream_options", "logit_bias", "response_format",
    "guided_json", "guided_regex", "guided_grammar", "guided_choice", "guided_whitespace_pattern"};
// clang-format on

}  // namespace

bool IsGenerationField(std::string_view key) { return IsOneOf(key, kGenerationKeys); }

absl::StatusOr<bool> GenerationFields::Handle(std::string_view key, od::value& v) {
  absl::StatusOr<bool> handled = HandleSampling(key, v);
  if (handled.ok() && !*handled) handled = HandleStopping(key, v);
  if (handled.ok() && !*handled) handled = HandleConstraint(key, v);
  return handled;
}

absl::Status GenerationFields::Finish(int32_t default_max_tokens) {
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

absl::StatusOr<bool> GenerationFields::HandleSampling(std::string_view key, od::value& v) {
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

absl::StatusOr<bool> GenerationFields::HandleStopping(std::string_view key, od::value& v) {
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

absl::StatusOr<bool> GenerationFields::HandleConstraint(std::string_view key, od::value& v) {
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

absl::Status GenerationFields::ReadStop(od::value& v) {
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

absl::Status GenerationFields::ReadStopTokenIds(od::value& v) {
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

absl::Status GenerationFields::ReadStreamOptions(od::value& v) {
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

}  // namespace phi::gateway
