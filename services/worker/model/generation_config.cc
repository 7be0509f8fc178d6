#include "services/worker/model/generation_config.h"

#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/common/status_macros.h"

namespace phi::worker::model {
namespace {

using nlohmann::json;

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field '", field, "' ", why));
}

// The field's value, or null when it is absent or JSON null (transformers' "unset").
const json* Find(const json& j, const char* field) {
  auto it = j.find(field);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

absl::Status GetInt(const json& j, absl::string_view source, const char* field, int64_t lo, int64_t hi,
                    std::optional<int32_t>* out) {
  const json* v = Find(j, field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number_integer()) return FieldError(source, field, "must be an integer");
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) return FieldError(source, field, absl::StrCat("is ", x, ", allowed range [", lo, ", ", hi, "]"));
  *out = static_cast<int32_t>(x);
  return absl::OkStatus();
}

// [lo, hi], or (lo, hi] when lo_open.
absl::Status GetFloat(const json& j, absl::string_view source, const char* field, double lo, bool lo_open, double hi,
                      std::optional<float>* out) {
  const json* v = Find(j, field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return FieldError(source, field, "must be a number");
  const double x = v->get<double>();
  if (!std::isfinite(x) || (lo_open ? x <= lo : x < lo) || x > hi) {
    return FieldError(source, field, absl::StrCat("is ", x, ", allowed range ", lo_open ? "(" : "[", lo, ", ", hi, "]"));
  }
  // A positive double below float's range becomes 0, which an open bound excludes (top_p 0 would
  // then make every request that leaves top_p unset invalid).
  const float f = static_cast<float>(x);
  if (lo_open && f <= lo) {
    return FieldError(source, field,
                      absl::StrCat("is ", x, ", which is ", f, " as a float; allowed range (", lo, ", ", hi, "]"));
  }
  *out = f;
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, absl::string_view source, const char* field, std::optional<bool>* out) {
  const json* v = Find(j, field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return FieldError(source, field, "must be true or false");
  *out = v->get<bool>();
  return absl::OkStatus();
}

// eos_token_id may be an integer or a list of integers.
absl::Status GetIdList(const json& j, absl::string_view source, const char* field, std::vector<int32_t>* out) {
  auto it = j.find(field);
  if (it == j.end()) return absl::OkStatus();
  out->clear();
  if (it->is_null()) return absl::OkStatus();
  auto one = [&](const json& v) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxInt32) {
      return FieldError(source, field, "must be a non-negative integer or a list of them");
    }
    out->push_back(static_cast<int32_t>(v.get<int64_t>()));
    return absl::OkStatus();
  };
  if (!it->is_array()) return one(*it);
  for (const auto& v : *it) PHI_RETURN_IF_ERROR(one(v));
  return absl::OkStatus();
}

absl::Status GetId(const json& j, absl::string_view source, const char* field, int32_t* out) {
  std::optional<int32_t> v;
  PHI_RETURN_IF_ERROR(GetInt(j, source, field, 0, kMaxInt32, &v));
  if (v) *out = *v;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GenerationConfig> ParseGenerationConfig(absl::string_view json_text, absl::string_view source) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  GenerationConfig g;
  PHI_RETURN_IF_ERROR(GetIdList(j, source, "eos_token_id", &g.eos_token_ids));
  PHI_RETURN_IF_ERROR(GetId(j, source, "bos_token_id", &g.bos_token_id));
  PHI_RETURN_IF_ERROR(GetId(j, source, "pad_token_id", &g.pad_token_id));
  // The ranges are the worker's SamplingParams ranges, so a default is always a valid request.
  PHI_RETURN_IF_ERROR(GetBool(j, source, "do_sample", &g.do_sample));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "temperature", 0.0, false, 100.0, &g.temperature));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "top_p", 0.0, true, 1.0, &g.top_p));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "top_k", 0, kMaxInt32, &g.top_k));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "repetition_penalty", 0.0, true, 10.0, &g.repetition_penalty));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "max_new_tokens", 1, kMaxInt32, &g.max_new_tokens));
  if (g.do_sample.value_or(false) && g.temperature == 0.0f) {
    return FieldError(source, "temperature", "is 0 with do_sample true, which transformers refuses too "
                                             "(greedy is do_sample false)");
  }
  return g;
}

absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& model_dir, const PhiConfig& config) {
  const std::string path = model_dir + "/generation_config.json";
  auto text = ReadFileToString(path);
  if (absl::IsNotFound(text.status())) {
    GenerationConfig g;
    g.eos_token_ids = config.eos_token_ids;
    g.bos_token_id = config.bos_token_id;
    return g;
  }
  if (!text.ok()) return text.status();
  auto g = ParseGenerationConfig(*text, path);
  if (g.ok() && g->eos_token_ids.empty()) g->eos_token_ids = config.eos_token_ids;
  return g;
}

GenerationDefaults DefaultsOf(const GenerationConfig& g) {
  GenerationDefaults d;
  if (g.do_sample.value_or(false)) d.temperature = g.temperature.value_or(1.0f);
  if (g.top_p) d.top_p = *g.top_p;
  if (g.top_k) d.top_k = *g.top_k;
  if (g.repetition_penalty) d.repetition_penalty = *g.repetition_penalty;
  if (g.max_new_tokens) d.max_new_tokens = *g.max_new_tokens;
  return d;
}

}  // namespace phi::worker::model
