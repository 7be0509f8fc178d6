// LoRA adapters in the PEFT format (adapter_config.json + adapter_model.safetensors, as
// `peft` saves them) for a Phi base model: parsed, checked against the base, and held as
// F32 matrices per adapted linear layer. The backends apply delta(x) = scaling * B (A x)
// next to the base layer's output (services/worker/lora/README.md).
//
// Usage:
//   PHI_ASSIGN_OR_RETURN(auto adapter, lora::LoadPeftAdapter("dpo", dir, config, limits));
//   const lora::LoraWeights* q = adapter->weights(layer, lora::LoraModule::kQ);  // null: not adapted
#ifndef PHI_SERVICES_WORKER_LORA_LORA_ADAPTER_H_
#define PHI_SERVICES_WORKER_LORA_LORA_ADAPTER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/model/shard_spec.h"

namespace phi::worker::lora {

// The linear layers of a Phi layer that an adapter may target, by their PEFT module names.
enum class LoraModule : int { kQ = 0, kK, kV, kDense, kFc1, kFc2 };
inline constexpr int kNumLoraModules = 6;

// "q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2".
std::string_view LoraModuleName(LoraModule module);
// "model.layers.<l>.self_attn.q_proj" ... "model.layers.<l>.mlp.fc2" (transformers' names).
std::string LoraModulePath(int layer, LoraModule module);

// One adapted linear layer W [out, in]: y = W x + b + scaling * B (A x).
struct LoraWeights {
  int32_t rank = 0;
  int64_t in = 0, out = 0;  // the base layer's input and output features (this shard's)
  float scaling = 0;        // lora_alpha / rank, or lora_alpha / sqrt(rank) with use_rslora
  std::vector<float> a;     // [rank, in], row-major (lora_A.weight)
  std::vector<float> b;     // [out, rank], row-major (lora_B.weight), not multiplied by scaling
};

struct LoraAdapter {
  std::string name;  // what requests name it by (their `model`)
  std::string path;  // the folder it was read from
  int32_t rank = 0;  // adapter_config.json "r" (the largest rank of its modules)
  float lora_alpha = 0;
  bool use_rslora = false;
  std::string base_model;  // adapter_config.json base_model_name_or_path, as written (may be empty)
  std::string dtype;       // the safetensors' dtype: "F32", "F16" or "BF16"
  // layers[l][m]: module m of layer l, or nullopt when the adapter leaves it alone.
  std::vector<std::array<std::optional<LoraWeights>, kNumLoraModules>> layers;

  const LoraWeights* weights(int layer, LoraModule module) const {
    const auto& w = layers[static_cast<size_t>(layer)][static_cast<size_t>(module)];
    return w ? &*w : nullptr;
  }
  // True when some layer adapts `module`.
  bool targets(LoraModule module) const;
  // Bytes of the A and B matrices held.
  int64_t weight_bytes() const;
};

struct LoraLimits {
  int32_t max_rank = 64;  // --max-lora-rank
};

// Reads the PEFT adapter folder `dir` for a base model of `base` and checks it. Refused with
// INVALID_ARGUMENT naming the file and the problem: a peft_type other than LORA, DoRA
// (use_dora), modules_to_save, rank/alpha patterns, bias other than "none", fan_in_fan_out,
// a target module outside the six (or a tensor of any other module, or of one target_modules
// does not select), a rank over limits.max_rank, a shape that does not fit the base (hidden
// size, MLP width, layer count: "base model mismatch"), a base_model_class other than
// PhiForCausalLM, a lora_A without its lora_B, a dtype other than F32/F16/BF16, non-finite
// weights, files larger than such an adapter can be; NOT_FOUND when a file is missing. Names,
// dtypes and shapes are all checked before weights are allocated, then converted to F32
// (services/worker/lora/README.md lists every case).
absl::StatusOr<std::shared_ptr<const LoraAdapter>> LoadPeftAdapter(std::string name, const std::string& dir,
                                                                  const model::PhiConfig& base,
                                                                  const LoraLimits& limits);

// The part of `adapter` that tensor-parallel rank `shard` applies, sliced as the base
// weights are (model/shard_spec.h): q/k/v and fc1 are split by output features, so their B
// rows are split (A whole); dense and fc2 by input features, so their A columns are split (B
// whole): each rank's B (A_r x_r) is a partial sum that the layer's one all-reduce adds up.
// world_size 1: a copy of `adapter`. `shard` must pass model::ValidateShardSpec(base, shard) and
// `adapter` must have been loaded for `base`.
std::shared_ptr<const LoraAdapter> SliceForShard(const LoraAdapter& adapter, const model::PhiConfig& base,
                                                 const model::ShardSpec& shard);

}  // namespace phi::worker::lora

#endif  // PHI_SERVICES_WORKER_LORA_LORA_ADAPTER_H_
