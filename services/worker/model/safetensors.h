// Reader for the safetensors format (ref: https://github.com/huggingface/safetensors,
// "Format"): an 8-byte little-endian header length N, N bytes of JSON mapping tensor
// names to {dtype, shape, data_offsets}, then the data. The file is memory-mapped; tensor
// bytes are read in place. Every malformed case is refused with the file and tensor named.
#ifndef PHI_SERVICES_WORKER_MODEL_SAFETENSORS_H_
#define PHI_SERVICES_WORKER_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/model/dtype.h"

namespace phi::worker::model {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section, [begin, end)
  uint64_t end = 0;

  int64_t NumElements() const;
  std::string ShapeString() const;  // "[2048, 512]"
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header: length within the file, JSON object, known
  // dtypes, offsets inside the data section, sizes equal to shape x dtype, no overlaps.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;
  const std::map<std::string, TensorInfo, std::less<>>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // First byte of the tensor's data (not necessarily aligned).
  const uint8_t* Data(const TensorInfo& info) const { return data_ + info.begin; }

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader();

  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  uint64_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  uint64_t data_size_ = 0;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_SAFETENSORS_H_
