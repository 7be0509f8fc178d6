// A model's `generation_config.json`: the ids that end generation and the sampling
// defaults its authors chose (do_sample, temperature, top_p, top_k, repetition_penalty,
// max_new_tokens), read as transformers' GenerationConfig reads them. A field of the wrong
// type or out of range is an error naming the file and the field: a worker that silently
// dropped a model's defaults would generate differently from transformers.
#ifndef PHI_SERVICES_WORKER_MODEL_GENERATION_CONFIG_H_
#define PHI_SERVICES_WORKER_MODEL_GENERATION_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/worker/model/phi_config.h"

namespace phi::worker::model {

// What the file states; an absent or null field stays unset.
struct GenerationConfig {
  std::vector<int32_t> eos_token_ids;  // generation stops on any of these
  int32_t bos_token_id = -1;           // -1: absent
  int32_t pad_token_id = -1;           // -1: absent
  std::optional<bool> do_sample;
  std::optional<float> temperature;         // [0, 100]
  std::optional<float> top_p;               // (0, 1]
  std::optional<int32_t> top_k;             // >= 0; 0: off
  std::optional<float> repetition_penalty;  // (0, 10]
  std::optional<int32_t> max_new_tokens;    // >= 1
};

// What a request that leaves a field unset gets, in the worker's terms.
struct GenerationDefaults {
  // transformers: do_sample false (its default) is greedy whatever the temperature says;
  // do_sample true samples at the file's temperature, else at 1.0. 0 here means greedy.
  float temperature = 0.0f;
  float top_p = 1.0f;               // 1: off
  int32_t top_k = 0;                // 0: off
  float repetition_penalty = 1.0f;  // 1: off
  int32_t max_new_tokens = 256;     // the model card's; the file's when it states one
};

absl::StatusOr<GenerationConfig> ParseGenerationConfig(absl::string_view json_text,
                                                       absl::string_view source);
// Reads `<model_dir>/generation_config.json`; when the file is absent, falls back to
// config.json's eos_token_id (as transformers does) and no sampling defaults.
absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& model_dir,
                                                      const PhiConfig& config);

// Only what the file states: transformers' implicit GenerationConfig values (top_k 50,
// max_length 20) are not added, as vLLM does for its server defaults.
GenerationDefaults DefaultsOf(const GenerationConfig& g);

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_GENERATION_CONFIG_H_
