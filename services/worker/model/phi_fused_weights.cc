#include "services/worker/model/phi_fused_weights.h"

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/model/shard_spec.h"

namespace phi::worker::model {
namespace {

FusedPart Part(int layer, const char* module, int64_t offset, int64_t size, bool with_bias) {
  FusedPart p;
  p.weight = PhiLayerTensorName(layer, absl::StrCat(module, ".weight"));
  if (with_bias) p.bias = PhiLayerTensorName(layer, absl::StrCat(module, ".bias"));
  p.offset = offset;
  p.size = size;
  return p;
}

}  // namespace

std::array<FusedPart, 4> FusedInParts(int layer, int64_t attn, int64_t fc1) {
  return {Part(layer, "self_attn.q_proj", 0, attn, true), Part(layer, "self_attn.k_proj", attn, attn, true),
          Part(layer, "self_attn.v_proj", 2 * attn, attn, true), Part(layer, "mlp.fc1", 3 * attn, fc1, true)};
}

std::array<FusedPart, 2> FusedOutParts(int layer, int64_t attn, int64_t fc1) {
  return {Part(layer, "self_attn.dense", 0, attn, false), Part(layer, "mlp.fc2", attn, fc1, false)};
}

absl::StatusOr<std::vector<float>> FusedOutBias(const PhiCheckpoint& ck, int layer) {
  PHI_ASSIGN_OR_RETURN(std::vector<float> b, ck.ReadF32(PhiLayerTensorName(layer, "self_attn.dense.bias")));
  PHI_ASSIGN_OR_RETURN(std::vector<float> fc2, ck.ReadF32(PhiLayerTensorName(layer, "mlp.fc2.bias")));
  if (fc2.size() != b.size()) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": self_attn.dense.bias has ", b.size(),
                                                   " entries, mlp.fc2.bias ", fc2.size()));
  }
  for (size_t i = 0; i < b.size(); ++i) b[i] += fc2[i];
  return b;
}

}  // namespace phi::worker::model
