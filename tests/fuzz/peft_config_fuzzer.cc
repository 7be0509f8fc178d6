// libFuzzer: any bytes as adapter_config.json -> lora::ParsePeftConfig. Beyond "no crash, no
// leak, no hang": a refusal is INVALID_ARGUMENT naming the file; an accepted config has a
// rank >= 1, a finite lora_alpha, and target_modules that answer TargetsModule for every module
// path of a Phi model (RE2 keeps a hostile regex linear in time) without ever naming lm_head
// through "all-linear".
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "services/worker/lora/peft_config.h"

namespace {

#define FUZZ_CHECK(cond)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      __builtin_printf("check failed at line %d: %s\n", __LINE__, #cond); \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

constexpr const char* kModules[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                    "self_attn.dense",  "mlp.fc1",          "mlp.fc2"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace phi::worker::lora;
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  auto config = ParsePeftConfig(json, "fuzz/adapter_config.json");
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(config.status().message().find("fuzz/adapter_config.json: ") == 0);
    return 0;
  }
  FUZZ_CHECK(config->r >= 1);
  FUZZ_CHECK(std::isfinite(config->lora_alpha));
  const PeftTargetModules& t = config->target_modules;
  FUZZ_CHECK(t.kind != PeftTargetModules::Kind::kRegex || t.regex != nullptr);
  FUZZ_CHECK(t.kind != PeftTargetModules::Kind::kNames || !t.names.empty());
  for (int layer = 0; layer < 3; ++layer) {
    for (const char* m : kModules) {
      (void)TargetsModule(*config, "model.layers." + std::to_string(layer) + "." + m, layer);
    }
  }
  const bool lm_head = TargetsModule(*config, "lm_head", -1);
  FUZZ_CHECK(!lm_head || t.kind == PeftTargetModules::Kind::kRegex);
  return 0;
}
