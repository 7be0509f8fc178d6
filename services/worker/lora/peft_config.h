// adapter_config.json of a PEFT LoRA adapter (peft's LoraConfig as save_pretrained writes it),
// parsed strictly: every field this server reads must have the JSON type peft writes, and every
// LoRA variant it does not compute (DoRA, modules_to_save, rank/alpha patterns, LoRA biases,
// fan_in_fan_out, ...) is refused by field name. Which modules the adapter targets is answered
// for a concrete module path (TargetsModule), as peft's check_target_module_exists does.
#ifndef PHI_SERVICES_WORKER_LORA_PEFT_CONFIG_H_
#define PHI_SERVICES_WORKER_LORA_PEFT_CONFIG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace phi::worker::lora {

// target_modules: a list of module names (peft matches a name to a module path when they are
// equal or the path ends with "." + name), "all-linear" (every linear layer but lm_head), or a
// regular expression that must match the whole module path ("model.layers.3.self_attn.q_proj").
struct PeftTargetModules {
  enum class Kind { kNames, kAllLinear, kRegex };
  Kind kind = Kind::kNames;
  std::vector<std::string> names;        // kNames
  std::string pattern;                   // kRegex, as written
  // kRegex, compiled with RE2 (linear-time matching; Python re syntax without lookaround or
  // backreferences).
  std::shared_ptr<const re2::RE2> regex;
};

struct PeftConfig {
  int32_t r = 8;
  double lora_alpha = 8;  // peft's default
  bool use_rslora = false;
  std::string base_model_name_or_path;  // may be empty
  std::string base_model_class;         // auto_mapping.base_model_class; empty when absent
  PeftTargetModules target_modules;
  // layers_to_transform: empty = every layer. Only with a list of names (peft refuses it, and
  // layers_pattern, when target_modules is a string); a full module path ignores it.
  std::vector<int64_t> layers_to_transform;
};

// Parses adapter_config.json text. `file_for_messages` prefixes every error message.
absl::StatusOr<PeftConfig> ParsePeftConfig(std::string_view json, std::string_view file_for_messages);

// Whether `config` adapts the module at `path` (transformers' name inside PhiForCausalLM, e.g.
// "model.layers.3.self_attn.q_proj") of layer `layer` (-1 for a module outside the layers).
bool TargetsModule(const PeftConfig& config, std::string_view path, int layer);

}  // namespace phi::worker::lora

#endif  // PHI_SERVICES_WORKER_LORA_PEFT_CONFIG_H_
