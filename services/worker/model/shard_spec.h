// Tensor-parallel slicing of a Phi checkpoint (Megatron-style): the first GEMM of each
// half of the parallel block is split by output features (q/k/v by whole heads, fc1 by
// columns), the second by input features (dense and fc2 by rows of their input), and the
// embedding / lm_head by vocabulary rows. A layer then needs one all-reduce: the partial
// sums of dense and fc2 add into the same residual (docs/architecture.md, "Phi-1.5 facts").
#ifndef PHI_SERVICES_WORKER_MODEL_SHARD_SPEC_H_
#define PHI_SERVICES_WORKER_MODEL_SHARD_SPEC_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/model/tensor_store.h"

namespace phi::worker::model {

struct ShardSpec {
  int32_t rank = 0;
  int32_t world_size = 1;
};

// Heads, intermediate size and vocabulary must divide evenly by world_size.
absl::Status ValidateShardSpec(const PhiConfig& config, const ShardSpec& shard);

enum class SplitKind {
  kReplicated,  // every rank holds all of it (LayerNorms; dense/fc2 biases, added once after the reduce)
  kOutput,      // axis 0 of an [out, in] weight or of its bias: q/k/v (by heads), fc1
  kInput,       // axis 1 of an [out, in] weight: dense, fc2
  kVocab,       // axis 0 of embed_tokens, lm_head and lm_head's bias
};

struct PhiTensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // full (unsharded) shape, as in the checkpoint
  SplitKind split = SplitKind::kReplicated;
};

// Every tensor a PhiForCausalLM checkpoint must hold, in load order.
std::vector<PhiTensorSpec> PhiTensorSpecs(const PhiConfig& config);

// "model.layers.<layer>.<suffix>"
std::string PhiLayerTensorName(int layer, absl::string_view suffix);

// The slice `shard` reads of `spec`.
Slice ShardSlice(const PhiTensorSpec& spec, const ShardSpec& shard);

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_SHARD_SPEC_H_
