#include "services/worker/lora/peft_config.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "services/common/status_macros.h"

namespace phi::worker::lora {
namespace {

using nlohmann::json;

// The linear layers of a Phi layer (lora_adapter.h's LoraModule names).
constexpr absl::string_view kModuleNames[] = {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"};
constexpr char kModuleList[] = "q_proj, k_proj, v_proj, dense, fc1, fc2";
// peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["phi"]: what a null target_modules means.
constexpr const char* kPeftDefaultPhiTargets[] = {"q_proj", "v_proj", "fc1", "fc2"};
// A regex longer than this is not a target_modules expression anyone writes.
constexpr size_t kMaxPatternBytes = 1024;
constexpr int64_t kMaxLayerIndex = 1 << 20;

class Parser {
 public:
  Parser(const json& j, absl::string_view file) : j_(j), file_(file) {}

  absl::Status Error(absl::string_view field, absl::string_view why) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": field '", field, "' ", why));
  }

  // The field's value, or nullptr when absent or null.
  const json* Find(const char* field) const {
    auto it = j_.find(field);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

  absl::Status String(const char* field, std::string* out) const {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Error(field, "must be a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  absl::Status Bool(const char* field, bool* out) const {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Error(field, "must be true or false");
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status Number(const char* field, double* out) const {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return Error(field, "must be a number");
    const double d = v->get<double>();
    if (!std::isfinite(d)) return Error(field, "must be finite");
    *out = d;
    return absl::OkStatus();
  }

  // A field that selects a LoRA variant this server does not compute: it must be absent, null,
  // false, or an empty list / object / string.
  absl::Status Unsupported(const char* field, absl::string_view what) const {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    const bool empty = (v->is_boolean() && !v->get<bool>()) || ((v->is_array() || v->is_object() || v->is_string()) && v->empty());
    if (empty) return absl::OkStatus();
    return Error(field, absl::StrCat("is ", v->dump(-1, ' ', true).substr(0, 80), ": ", what, " is not supported"));
  }

 private:
  const json& j_;
  absl::string_view file_;
};

bool IsModuleName(absl::string_view name) {
  return std::find(std::begin(kModuleNames), std::end(kModuleNames), name) != std::end(kModuleNames);
}

// A bare identifier: peft would fullmatch it as a regex against whole module paths and find
// nothing; this server reads it as the one-element list it was meant to be.
bool IsIdentifier(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

absl::Status ParseTargetNames(const Parser& p, const json& list, PeftTargetModules* out) {
  out->kind = PeftTargetModules::Kind::kNames;
  for (const auto& v : list) {
    if (!v.is_string() || v.get<std::string>().empty()) {
      return p.Error("target_modules", "must be a list of module names (non-empty strings) or a string");
    }
    const std::string name = v.get<std::string>();
    // peft matches a name to the paths equal to it or ending in ".<name>": the last component
    // is the module's own name.
    const size_t dot = name.rfind('.');
    const absl::string_view leaf = dot == std::string::npos ? absl::string_view(name) : absl::string_view(name).substr(dot + 1);
    if (!IsModuleName(leaf)) {
      return p.Error("target_modules", absl::StrCat("names '", name.substr(0, 80), "', which is not one of ", kModuleList,
                                                    " (the linear layers of a Phi layer)"));
    }
    out->names.push_back(name);
  }
  if (out->names.empty()) return p.Error("target_modules", "is an empty list: the adapter would adapt nothing");
  return absl::OkStatus();
}

absl::Status ParseTargetRegex(const Parser& p, const std::string& pattern, PeftTargetModules* out) {
  if (pattern.size() > kMaxPatternBytes) {
    return p.Error("target_modules", absl::StrCat("is a regular expression of ", pattern.size(), " bytes (at most ",
                                                  kMaxPatternBytes, ")"));
  }
  // Python's \Z is RE2's \z; everything else RE2 reads as Python's re does, or refuses.
  if (absl::StrContains(pattern, "\\Z")) {
    return p.Error("target_modules", "uses \\Z, which this server does not interpret (write $ instead)");
  }
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(1 << 20);
  auto re = std::make_shared<const RE2>(pattern, options);
  if (!re->ok()) {
    return p.Error("target_modules",
                   absl::StrCat("is the regular expression '", pattern.substr(0, 120),
                                "', which this server cannot interpret (", re->error(),
                                "); lookaround and backreferences are not supported: list the module names instead"));
  }
  out->kind = PeftTargetModules::Kind::kRegex;
  out->pattern = pattern;
  out->regex = std::move(re);
  return absl::OkStatus();
}

absl::Status ParseTargetModules(const Parser& p, PeftTargetModules* out) {
  const json* v = p.Find("target_modules");
  if (v == nullptr) {
    out->kind = PeftTargetModules::Kind::kNames;
    out->names.assign(std::begin(kPeftDefaultPhiTargets), std::end(kPeftDefaultPhiTargets));
    return absl::OkStatus();
  }
  if (v->is_array()) return ParseTargetNames(p, *v, out);
  if (!v->is_string()) return p.Error("target_modules", "must be a list of module names or a string");
  const std::string s = v->get<std::string>();
  if (absl::AsciiStrToLower(s) == "all-linear") {
    out->kind = PeftTargetModules::Kind::kAllLinear;
    return absl::OkStatus();
  }
  if (IsIdentifier(s)) return ParseTargetNames(p, json::array({s}), out);
  return ParseTargetRegex(p, s, out);
}

absl::Status ParseLayersToTransform(const Parser& p, std::vector<int64_t>* out) {
  const json* v = p.Find("layers_to_transform");
  if (v == nullptr) return absl::OkStatus();
  auto one = [&](const json& e) -> absl::Status {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > kMaxLayerIndex) {
      return p.Error("layers_to_transform", absl::StrCat("must be a layer index in [0, ", kMaxLayerIndex,
                                                         "] or a list of them"));
    }
    out->push_back(e.get<int64_t>());
    return absl::OkStatus();
  };
  if (!v->is_array()) return one(*v);
  for (const auto& e : *v) PHI_RETURN_IF_ERROR(one(e));
  return absl::OkStatus();
}

// layers_pattern names the ModuleList that holds the layers; Phi's is "layers".
absl::Status CheckLayersPattern(const Parser& p) {
  const json* v = p.Find("layers_pattern");
  if (v == nullptr) return absl::OkStatus();
  auto ok = [](const json& e) { return e.is_string() && (e.empty() || e.get<std::string>() == "layers"); };
  if (ok(*v)) return absl::OkStatus();
  if (v->is_array() && std::all_of(v->begin(), v->end(), ok)) return absl::OkStatus();
  return p.Error("layers_pattern", "must be null, \"layers\" or a list of \"layers\" (Phi's layers are model.layers)");
}

absl::Status ParseAutoMapping(const Parser& p, PeftConfig* c) {
  const json* v = p.Find("auto_mapping");
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_object()) return p.Error("auto_mapping", "must be an object");
  auto it = v->find("base_model_class");
  if (it == v->end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return p.Error("auto_mapping.base_model_class", "must be a string");
  c->base_model_class = it->get<std::string>();
  if (c->base_model_class != "PhiForCausalLM") {
    return p.Error("auto_mapping.base_model_class",
                   absl::StrCat("is '", c->base_model_class.substr(0, 80), "': the base model here is PhiForCausalLM"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PeftConfig> ParsePeftConfig(std::string_view json_text, std::string_view file_for_messages) {
  const absl::string_view text(json_text.data(), json_text.size());
  const absl::string_view file(file_for_messages.data(), file_for_messages.size());
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(file, ": not a JSON object"));
  const Parser p(j, file);
  PeftConfig c;

  const json* type = p.Find("peft_type");
  if (type == nullptr) return p.Error("peft_type", "is missing (must be \"LORA\")");
  if (!type->is_string()) return p.Error("peft_type", "must be a string");
  if (type->get<std::string>() != "LORA") {
    return p.Error("peft_type", absl::StrCat("is '", type->get<std::string>().substr(0, 40),
                                             "': only LORA adapters are supported"));
  }
  if (const json* r = p.Find("r"); r != nullptr) {
    if (!r->is_number_integer()) return p.Error("r", "must be an integer");
    const int64_t v = r->get<int64_t>();
    if (v < 1 || v > std::numeric_limits<int32_t>::max()) {
      return p.Error("r", absl::StrCat("is ", v, ", must be at least 1"));
    }
    c.r = static_cast<int32_t>(v);
  }
  PHI_RETURN_IF_ERROR(p.Number("lora_alpha", &c.lora_alpha));
  PHI_RETURN_IF_ERROR(p.Bool("use_rslora", &c.use_rslora));
  PHI_RETURN_IF_ERROR(p.String("base_model_name_or_path", &c.base_model_name_or_path));
  PHI_RETURN_IF_ERROR(ParseAutoMapping(p, &c));
  PHI_RETURN_IF_ERROR(ParseTargetModules(p, &c.target_modules));
  PHI_RETURN_IF_ERROR(ParseLayersToTransform(p, &c.layers_to_transform));
  PHI_RETURN_IF_ERROR(CheckLayersPattern(p));
  if (const json* t = p.Find("target_modules"); t != nullptr && t->is_string()) {
    // peft's LoraConfig refuses these with a string target_modules (a regex, "all-linear").
    for (const char* field : {"layers_to_transform", "layers_pattern"}) {
      if (p.Find(field) != nullptr) {
        return p.Error(field, "cannot be used when target_modules is a string (as in peft): list the module names");
      }
    }
  }

  // Type checks of fields read only to refuse what they select.
  bool flag = false;
  PHI_RETURN_IF_ERROR(p.Bool("use_dora", &flag));
  if (flag) return p.Error("use_dora", "is true: DoRA adapters are not supported");
  PHI_RETURN_IF_ERROR(p.Bool("fan_in_fan_out", &flag));
  if (flag) return p.Error("fan_in_fan_out", "is true: only nn.Linear layers (fan_in_fan_out false) are supported");
  PHI_RETURN_IF_ERROR(p.Bool("lora_bias", &flag));
  if (flag) return p.Error("lora_bias", "is true: LoRA biases on lora_B are not supported");
  std::string bias = "none";
  PHI_RETURN_IF_ERROR(p.String("bias", &bias));
  if (bias != "none") {
    return p.Error("bias", absl::StrCat("is '", bias.substr(0, 40), "': only \"none\" is supported (trained biases "
                                        "would change the base model's weights)"));
  }
  double dropout = 0;
  PHI_RETURN_IF_ERROR(p.Number("lora_dropout", &dropout));  // training only
  if (const json* m = p.Find("modules_to_save"); m != nullptr && !m->is_array()) {
    return p.Error("modules_to_save", "must be null or a list of module names");
  }
  PHI_RETURN_IF_ERROR(p.Unsupported("modules_to_save", "saving whole trained copies of base modules"));
  for (const char* field : {"rank_pattern", "alpha_pattern"}) {
    if (const json* m = p.Find(field); m != nullptr && !m->is_object()) return p.Error(field, "must be an object");
  }
  PHI_RETURN_IF_ERROR(p.Unsupported("rank_pattern", "a rank per module"));
  PHI_RETURN_IF_ERROR(p.Unsupported("alpha_pattern", "an alpha per module"));
  if (const json* m = p.Find("layer_replication"); m != nullptr && !m->is_array()) {
    return p.Error("layer_replication", "must be null or a list");
  }
  PHI_RETURN_IF_ERROR(p.Unsupported("layer_replication", "replicating base layers"));
  return c;
}

bool TargetsModule(const PeftConfig& config, std::string_view module_path, int layer) {
  const absl::string_view path(module_path.data(), module_path.size());
  const PeftTargetModules& t = config.target_modules;
  if (t.kind == PeftTargetModules::Kind::kRegex) {
    return RE2::FullMatch(re2::StringPiece(path.data(), path.size()), *t.regex);
  }
  bool found = false;
  if (t.kind == PeftTargetModules::Kind::kAllLinear) {
    // Every nn.Linear but the output layer: the six modules of each layer.
    const size_t dot = path.rfind('.');
    return layer >= 0 && IsModuleName(dot == absl::string_view::npos ? path : path.substr(dot + 1));
  } else {
    for (const std::string& name : t.names) {
      if (path == name) return true;  // named directly: layers_to_transform does not apply (as in peft)
      found = found || (path.size() > name.size() && absl::EndsWith(path, name) && path[path.size() - name.size() - 1] == '.');
    }
  }
  if (!found || config.layers_to_transform.empty()) return found;
  return layer >= 0 && std::find(config.layers_to_transform.begin(), config.layers_to_transform.end(), layer) !=
                           config.layers_to_transform.end();
}

}  // namespace phi::worker::lora
