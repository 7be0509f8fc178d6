// A Phi model folder opened for one tensor-parallel rank: config.json,
// generation_config.json and the weights, every tensor checked for presence, shape and
// dtype up front so that a bad folder fails at load, not mid-request.
#ifndef PHI_SERVICES_WORKER_MODEL_PHI_CHECKPOINT_H_
#define PHI_SERVICES_WORKER_MODEL_PHI_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/model/generation_config.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/model/shard_spec.h"
#include "services/worker/model/tensor_store.h"

namespace phi::worker::model {

class PhiCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<PhiCheckpoint>> Open(const std::string& model_dir,
                                                             const ShardSpec& shard = {});

  const PhiConfig& config() const { return config_; }
  const GenerationConfig& generation() const { return generation_; }
  const ShardSpec& shard() const { return shard_; }
  const TensorStore& store() const { return *store_; }

  // This rank's shape of tensor `name` (a name from PhiTensorSpecs).
  absl::StatusOr<std::vector<int64_t>> LocalShape(absl::string_view name) const;
  // Reads this rank's slice of `name`, converted to `out_dtype` (kF32 or kBF16).
  absl::Status ReadInto(absl::string_view name, DType out_dtype, void* out, int64_t out_elements) const;
  absl::StatusOr<std::vector<float>> ReadF32(absl::string_view name) const;
  absl::StatusOr<std::vector<uint16_t>> ReadBf16(absl::string_view name) const;

 private:
  PhiConfig config_;
  GenerationConfig generation_;
  ShardSpec shard_;
  std::unique_ptr<TensorStore> store_;
  std::map<std::string, PhiTensorSpec, std::less<>> specs_;
};

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_PHI_CHECKPOINT_H_
