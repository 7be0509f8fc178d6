#include "services/worker/model/shard_spec.h"

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"

namespace phi::worker::model {

absl::Status ValidateShardSpec(const PhiConfig& config, const ShardSpec& shard) {
  if (shard.world_size < 1 || shard.rank < 0 || shard.rank >= shard.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard rank ", shard.rank, " / world size ", shard.world_size, ": need 0 <= rank < world size"));
  }
  auto check = [&](const char* field, int64_t value) -> absl::Status {
    if (value % shard.world_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat("config field '", field, "' (", value,
                                                     ") is not divisible by tensor-parallel world size ",
                                                     shard.world_size));
    }
    return absl::OkStatus();
  };
  PHI_RETURN_IF_ERROR(check("num_attention_heads", config.num_attention_heads));
  PHI_RETURN_IF_ERROR(check("intermediate_size", config.intermediate_size));
  return check("vocab_size", config.vocab_size);
}

std::string PhiLayerTensorName(int layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

std::vector<PhiTensorSpec> PhiTensorSpecs(const PhiConfig& c) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, v = c.vocab_size;
  std::vector<PhiTensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {v, h}, SplitKind::kVocab});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto add = [&](absl::string_view suffix, std::vector<int64_t> shape, SplitKind split) {
      specs.push_back({PhiLayerTensorName(l, suffix), std::move(shape), split});
    };
    add("input_layernorm.weight", {h}, SplitKind::kReplicated);
    add("input_layernorm.bias", {h}, SplitKind::kReplicated);
    for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
      add(absl::StrCat("self_attn.", p, ".weight"), {h, h}, SplitKind::kOutput);
      add(absl::StrCat("self_attn.", p, ".bias"), {h}, SplitKind::kOutput);
    }
    add("self_attn.dense.weight", {h, h}, SplitKind::kInput);
    add("self_attn.dense.bias", {h}, SplitKind::kReplicated);
    add("mlp.fc1.weight", {i, h}, SplitKind::kOutput);
    add("mlp.fc1.bias", {i}, SplitKind::kOutput);
    add("mlp.fc2.weight", {h, i}, SplitKind::kInput);
    add("mlp.fc2.bias", {h}, SplitKind::kReplicated);
  }
  specs.push_back({"model.final_layernorm.weight", {h}, SplitKind::kReplicated});
  specs.push_back({"model.final_layernorm.bias", {h}, SplitKind::kReplicated});
  specs.push_back({"lm_head.weight", {v, h}, SplitKind::kVocab});
  specs.push_back({"lm_head.bias", {v}, SplitKind::kVocab});
  return specs;
}

Slice ShardSlice(const PhiTensorSpec& spec, const ShardSpec& shard) {
  if (shard.world_size == 1 || spec.split == SplitKind::kReplicated) return Slice::Whole();
  const int axis = spec.split == SplitKind::kInput ? 1 : 0;
  const int64_t part = spec.shape[axis] / shard.world_size;
  return Slice{axis, part * shard.rank, part * (shard.rank + 1)};
}

}  // namespace phi::worker::model
