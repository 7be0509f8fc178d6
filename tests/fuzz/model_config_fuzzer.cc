// libFuzzer: any bytes as config.json and as generation_config.json -> model::ParsePhiConfig and
// model::ParseGenerationConfig. Beyond "no crash, no leak, no UB": a refusal is INVALID_ARGUMENT
// naming the file; an accepted config.json gives a shape the engine can compute (positive sizes,
// heads that divide hidden_size, an even rotary dim >= 2, finite positive rope_theta and
// layer_norm_eps); an accepted generation_config.json stays in its documented ranges and its
// DefaultsOf is a valid request's sampling (generation_config.h).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "services/worker/model/generation_config.h"
#include "services/worker/model/phi_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace phi::worker::model;

void CheckPhiConfig(absl::string_view json) {
  auto c = ParsePhiConfig(json, "fuzz/config.json");
  if (!c.ok()) {
    FUZZ_CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(c.status().message().find("fuzz/config.json: ") == 0);
    return;
  }
  FUZZ_CHECK(c->model_type == "phi" && c->hidden_act == "gelu_new");
  FUZZ_CHECK(c->vocab_size >= 1 && c->hidden_size >= 1 && c->intermediate_size >= 1);
  FUZZ_CHECK(c->num_hidden_layers >= 1 && c->num_attention_heads >= 1);
  FUZZ_CHECK(c->num_key_value_heads == c->num_attention_heads);
  FUZZ_CHECK(c->hidden_size % c->num_attention_heads == 0 && c->head_dim() >= 1);
  FUZZ_CHECK(c->rotary_dim() >= 2 && c->rotary_dim() % 2 == 0 && c->rotary_dim() <= c->head_dim());
  FUZZ_CHECK(c->max_position_embeddings >= 1);
  FUZZ_CHECK(std::isfinite(c->rope_theta) && c->rope_theta > 0);
  FUZZ_CHECK(std::isfinite(c->layer_norm_eps) && c->layer_norm_eps > 0);
  FUZZ_CHECK(!c->qk_layernorm && !c->has_rope_scaling && !c->tie_word_embeddings);
  FUZZ_CHECK(c->bos_token_id >= 0);
  for (int32_t id : c->eos_token_ids) FUZZ_CHECK(id >= 0);
}

void CheckGenerationConfig(absl::string_view json) {
  auto g = ParseGenerationConfig(json, "fuzz/generation_config.json");
  if (!g.ok()) {
    FUZZ_CHECK(g.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(g.status().message().find("fuzz/generation_config.json: ") == 0);
    return;
  }
  for (int32_t id : g->eos_token_ids) FUZZ_CHECK(id >= 0);
  FUZZ_CHECK(g->bos_token_id >= -1 && g->pad_token_id >= -1);
  FUZZ_CHECK(!g->temperature || (*g->temperature >= 0 && *g->temperature <= 100));
  FUZZ_CHECK(!g->top_p || (*g->top_p > 0 && *g->top_p <= 1));
  FUZZ_CHECK(!g->top_k || *g->top_k >= 0);
  FUZZ_CHECK(!g->repetition_penalty || (*g->repetition_penalty > 0 && *g->repetition_penalty <= 10));
  FUZZ_CHECK(!g->max_new_tokens || *g->max_new_tokens >= 1);
  const GenerationDefaults d = DefaultsOf(*g);
  FUZZ_CHECK(d.temperature >= 0 && d.temperature <= 100);
  FUZZ_CHECK(!(g->do_sample.value_or(false)) || d.temperature > 0);
  FUZZ_CHECK(d.top_p > 0 && d.top_p <= 1);
  FUZZ_CHECK(d.top_k >= 0);
  FUZZ_CHECK(d.repetition_penalty > 0 && d.repetition_penalty <= 10);
  FUZZ_CHECK(d.max_new_tokens >= 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  CheckPhiConfig(json);
  CheckGenerationConfig(json);
  return 0;
}
