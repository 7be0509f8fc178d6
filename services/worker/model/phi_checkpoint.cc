#include "services/worker/model/phi_checkpoint.h"

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"

namespace phi::worker::model {

absl::StatusOr<std::unique_ptr<PhiCheckpoint>> PhiCheckpoint::Open(const std::string& model_dir,
                                                                   const ShardSpec& shard) {
  auto ckpt = std::unique_ptr<PhiCheckpoint>(new PhiCheckpoint());
  PHI_ASSIGN_OR_RETURN(ckpt->config_, LoadPhiConfig(model_dir));
  PHI_ASSIGN_OR_RETURN(ckpt->generation_, LoadGenerationConfig(model_dir, ckpt->config_));
  PHI_RETURN_IF_ERROR(ValidateShardSpec(ckpt->config_, shard));
  ckpt->shard_ = shard;
  PHI_ASSIGN_OR_RETURN(ckpt->store_, TensorStore::Open(model_dir));
  for (auto& spec : PhiTensorSpecs(ckpt->config_)) {
    PHI_RETURN_IF_ERROR(ckpt->store_->Check(spec.name, spec.shape));
    ckpt->specs_.emplace(spec.name, std::move(spec));
  }
  return ckpt;
}

absl::StatusOr<std::vector<int64_t>> PhiCheckpoint::LocalShape(absl::string_view name) const {
  auto it = specs_.find(name);
  if (it == specs_.end()) return absl::NotFoundError(absl::StrCat("'", name, "' is not a Phi tensor"));
  return ShardSlice(it->second, shard_).Apply(it->second.shape);
}

absl::Status PhiCheckpoint::ReadInto(absl::string_view name, DType out_dtype, void* out,
                                     int64_t out_elements) const {
  auto it = specs_.find(name);
  if (it == specs_.end()) return absl::NotFoundError(absl::StrCat("'", name, "' is not a Phi tensor"));
  return store_->Read(name, it->second.shape, ShardSlice(it->second, shard_), out_dtype, out, out_elements);
}

absl::StatusOr<std::vector<float>> PhiCheckpoint::ReadF32(absl::string_view name) const {
  PHI_ASSIGN_OR_RETURN(auto shape, LocalShape(name));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  PHI_RETURN_IF_ERROR(ReadInto(name, DType::kF32, v.data(), n));
  return v;
}

absl::StatusOr<std::vector<uint16_t>> PhiCheckpoint::ReadBf16(absl::string_view name) const {
  PHI_ASSIGN_OR_RETURN(auto shape, LocalShape(name));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<uint16_t> v(static_cast<size_t>(n));
  PHI_RETURN_IF_ERROR(ReadInto(name, DType::kBF16, v.data(), n));
  return v;
}

}  // namespace phi::worker::model
