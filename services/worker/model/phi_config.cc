#include "services/worker/model/phi_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/common/status_macros.h"

namespace phi::worker::model {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field '", field, "' ", why));
}

// Reads an optional integer field into *out, checking [lo, hi].
absl::Status GetInt(const json& j, absl::string_view source, const char* field, int64_t lo,
                    int64_t hi, int32_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(source, field, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return FieldError(source, field,
                      absl::StrCat("is ", v, ", allowed range [", lo, ", ", hi, "]"));
  }
  *out = static_cast<int32_t>(v);
  return absl::OkStatus();
}

template <typename T>
absl::Status GetFloat(const json& j, absl::string_view source, const char* field, T* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(source, field, "must be a number");
  const double v = it->get<double>();
  if (!std::isfinite(v)) return FieldError(source, field, "must be finite");
  *out = static_cast<T>(v);
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, absl::string_view source, const char* field, bool* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(source, field, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status GetString(const json& j, absl::string_view source, const char* field,
                       std::string* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(source, field, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// eos_token_id may be an integer or a list of integers.
absl::Status GetIdList(const json& j, absl::string_view source, const char* field,
                       std::vector<int32_t>* out) {
  auto it = j.find(field);
  if (it == j.end()) return absl::OkStatus();
  out->clear();
  if (it->is_null()) return absl::OkStatus();
  auto one = [&](const json& v) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return FieldError(source, field, "must be a non-negative integer or a list of them");
    }
    out->push_back(static_cast<int32_t>(v.get<int64_t>()));
    return absl::OkStatus();
  };
  if (it->is_array()) {
    for (const auto& v : *it) {
      PHI_RETURN_IF_ERROR(one(v));
    }
    return absl::OkStatus();
  }
  return one(*it);
}

}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path, ": read error"));
  return ss.str();
}

absl::StatusOr<PhiConfig> ParsePhiConfig(absl::string_view json_text, absl::string_view source) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));

  PhiConfig c;
  PHI_RETURN_IF_ERROR(GetString(j, source, "model_type", &c.model_type));
  if (c.model_type != "phi") {
    return FieldError(source, "model_type", absl::StrCat("is '", c.model_type, "', only 'phi' is supported"));
  }
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    bool found = it->empty();
    for (const auto& a : *it) found = found || (a.is_string() && a.get<std::string>() == "PhiForCausalLM");
    if (!found) return FieldError(source, "architectures", "does not name PhiForCausalLM");
  }
  constexpr int64_t kMaxDim = 1 << 20;
  PHI_RETURN_IF_ERROR(GetInt(j, source, "vocab_size", 1, 1 << 24, &c.vocab_size));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "hidden_size", 1, kMaxDim, &c.hidden_size));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "intermediate_size", 1, kMaxDim, &c.intermediate_size));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "num_hidden_layers", 1, 4096, &c.num_hidden_layers));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "num_attention_heads", 1, 4096, &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  PHI_RETURN_IF_ERROR(GetInt(j, source, "num_key_value_heads", 1, 4096, &c.num_key_value_heads));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "resid_pdrop", &c.resid_pdrop));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "embd_pdrop", &c.embd_pdrop));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "attention_dropout", &c.attention_dropout));
  PHI_RETURN_IF_ERROR(GetString(j, source, "hidden_act", &c.hidden_act));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "max_position_embeddings", 1, 1 << 24, &c.max_position_embeddings));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "initializer_range", &c.initializer_range));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "layer_norm_eps", &c.layer_norm_eps));
  PHI_RETURN_IF_ERROR(GetBool(j, source, "use_cache", &c.use_cache));
  PHI_RETURN_IF_ERROR(GetBool(j, source, "tie_word_embeddings", &c.tie_word_embeddings));
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "rope_theta", &c.rope_theta));
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) c.has_rope_scaling = true;
  PHI_RETURN_IF_ERROR(GetFloat(j, source, "partial_rotary_factor", &c.partial_rotary_factor));
  PHI_RETURN_IF_ERROR(GetBool(j, source, "qk_layernorm", &c.qk_layernorm));
  PHI_RETURN_IF_ERROR(GetInt(j, source, "bos_token_id", 0, std::numeric_limits<int32_t>::max(), &c.bos_token_id));
  PHI_RETURN_IF_ERROR(GetIdList(j, source, "eos_token_id", &c.eos_token_ids));
  PHI_RETURN_IF_ERROR(GetString(j, source, "torch_dtype", &c.torch_dtype));

  // What this engine computes; anything else is refused by name.
  if (c.hidden_act != "gelu_new") {
    return FieldError(source, "hidden_act", absl::StrCat("is '", c.hidden_act, "', only 'gelu_new' is supported"));
  }
  if (c.qk_layernorm) return FieldError(source, "qk_layernorm", "is true, which is not supported");
  if (c.has_rope_scaling) return FieldError(source, "rope_scaling", "is set, which is not supported (must be null)");
  if (c.tie_word_embeddings) return FieldError(source, "tie_word_embeddings", "is true, which is not supported (Phi has an untied lm_head)");
  if (c.num_key_value_heads != c.num_attention_heads) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat("is ", c.num_key_value_heads, ", must equal num_attention_heads (",
                                   c.num_attention_heads, "): grouped KV heads are not supported"));
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return FieldError(source, "hidden_size",
                      absl::StrCat("is ", c.hidden_size, ", not a multiple of num_attention_heads (",
                                   c.num_attention_heads, ")"));
  }
  if (!(c.partial_rotary_factor > 0.0 && c.partial_rotary_factor <= 1.0)) {
    return FieldError(source, "partial_rotary_factor", absl::StrCat("is ", c.partial_rotary_factor, ", allowed (0, 1]"));
  }
  if (c.rotary_dim() < 2 || c.rotary_dim() % 2 != 0) {
    return FieldError(source, "partial_rotary_factor",
                      absl::StrCat("gives rotary dim ", c.rotary_dim(), " of head_dim ", c.head_dim(),
                                   "; it must be even and >= 2"));
  }
  if (!(c.rope_theta > 0.0)) return FieldError(source, "rope_theta", "must be > 0");
  if (!(c.layer_norm_eps > 0.0)) return FieldError(source, "layer_norm_eps", "must be > 0");
  return c;
}

absl::StatusOr<PhiConfig> LoadPhiConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  PHI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParsePhiConfig(text, path);
}

}  // namespace phi::worker::model
