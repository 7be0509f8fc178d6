// The tensors of a Hugging Face model folder: `model.safetensors`, or the shards that
// `model.safetensors.index.json` names. Reads whole tensors or one slice of them (for a
// tensor-parallel rank), converting F32/F16/BF16 to the backend's F32 or BF16.
#ifndef PHI_SERVICES_WORKER_MODEL_TENSOR_STORE_H_
#define PHI_SERVICES_WORKER_MODEL_TENSOR_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/worker/model/dtype.h"
#include "services/worker/model/safetensors.h"

namespace phi::worker::model {

// A contiguous range of one axis; axis -1 means the whole tensor.
struct Slice {
  int axis = -1;
  int64_t begin = 0;
  int64_t end = 0;

  static Slice Whole() { return {}; }
  std::vector<int64_t> Apply(const std::vector<int64_t>& shape) const;
};

class TensorStore {
 public:
  // Opens `<dir>/model.safetensors.index.json` when present, else `<dir>/model.safetensors`.
  static absl::StatusOr<std::unique_ptr<TensorStore>> Open(const std::string& model_dir);

  struct Entry {
    const SafetensorsFile* file = nullptr;
    const TensorInfo* info = nullptr;
  };
  // NOT_FOUND naming the tensor and the folder.
  absl::StatusOr<Entry> Find(absl::string_view name) const;

  // Checks that `name` is a float tensor (F32, F16, BF16) of exactly `shape`.
  absl::Status Check(absl::string_view name, const std::vector<int64_t>& shape) const;

  // Reads `slice` of tensor `name` (which must have `shape`) into `out`, row-major in the
  // sliced shape, converted to `out_dtype` (kF32 or kBF16). `out_elements` guards the size.
  absl::Status Read(absl::string_view name, const std::vector<int64_t>& shape, const Slice& slice,
                    DType out_dtype, void* out, int64_t out_elements) const;

  const std::string& model_dir() const { return model_dir_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::string model_dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> index_;
};

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_TENSOR_STORE_H_
