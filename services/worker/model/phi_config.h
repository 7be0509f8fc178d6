// The model's shape and numerics from a Hugging Face `config.json` (model_type "phi").
// Values this engine does not implement (qk_layernorm, rope_scaling, grouped KV heads,
// another activation, tied embeddings) are refused by field name rather than silently
// computed wrong. generation_config.json is generation_config.h's.
#ifndef PHI_SERVICES_WORKER_MODEL_PHI_CONFIG_H_
#define PHI_SERVICES_WORKER_MODEL_PHI_CONFIG_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace phi::worker::model {

// Every PhiConfig field of transformers' configuration_phi.py; defaults are its defaults.
struct PhiConfig {
  std::string model_type = "phi";
  int32_t vocab_size = 51200;
  int32_t hidden_size = 2048;
  int32_t intermediate_size = 8192;
  int32_t num_hidden_layers = 24;
  int32_t num_attention_heads = 32;
  int32_t num_key_value_heads = 32;  // null in the file means num_attention_heads
  float resid_pdrop = 0.0f;          // training only
  float embd_pdrop = 0.0f;           // training only
  float attention_dropout = 0.0f;    // training only
  std::string hidden_act = "gelu_new";
  int32_t max_position_embeddings = 2048;
  float initializer_range = 0.02f;   // training only
  double layer_norm_eps = 1e-5;
  bool use_cache = true;
  bool tie_word_embeddings = false;
  double rope_theta = 10000.0;
  bool has_rope_scaling = false;     // rope_scaling non-null: refused
  double partial_rotary_factor = 0.5;
  bool qk_layernorm = false;
  int32_t bos_token_id = 1;
  std::vector<int32_t> eos_token_ids = {2};
  std::string torch_dtype;           // informational: the dtype the weights were saved in

  int32_t head_dim() const { return hidden_size / num_attention_heads; }
  // transformers: int(partial_rotary_factor * head_dim).
  int32_t rotary_dim() const { return static_cast<int32_t>(partial_rotary_factor * head_dim()); }
};

// Parses config.json text; `source` names the file in error messages.
absl::StatusOr<PhiConfig> ParsePhiConfig(absl::string_view json_text, absl::string_view source);
// Reads `<model_dir>/config.json`.
absl::StatusOr<PhiConfig> LoadPhiConfig(const std::string& model_dir);

// Reads a whole file into a string; NOT_FOUND / INTERNAL naming the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_PHI_CONFIG_H_
