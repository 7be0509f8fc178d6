// Writer for the safetensors format that safetensors.h reads: an 8-byte little-endian header
// length, the JSON header ({name: {dtype, shape, data_offsets}}, optional "__metadata__" of
// strings) padded with spaces to a multiple of 8 bytes, then the tensors' bytes. Tensors are
// laid out as the reference writer does (larger element sizes first, then by name), so every
// tensor starts at a multiple of its element size. Used by the LoRA merge tool and by tests that
// write adapters and checkpoints.
//
// Usage:
//   std::vector<float> w = ...;
//   PHI_RETURN_IF_ERROR(model::WriteSafetensors(path, {{"w", DType::kF32, {2, 3}, w.data(), w.size() * 4}}));
#ifndef PHI_SERVICES_WORKER_MODEL_SAFETENSORS_WRITER_H_
#define PHI_SERVICES_WORKER_MODEL_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/worker/model/dtype.h"

namespace phi::worker::model {

// One tensor to write; `data` (not owned) holds `bytes` bytes, row-major, little-endian.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t bytes = 0;
};

// The whole file's bytes. INVALID_ARGUMENT for an empty, duplicate or "__metadata__" name, a
// negative dimension, or `bytes` other than the shape's element count x the dtype's size.
absl::StatusOr<std::string> SerializeSafetensors(const std::vector<TensorToWrite>& tensors,
                                                 const std::map<std::string, std::string>& metadata = {});

// Writes SerializeSafetensors' bytes to `path` through a temporary file in the same folder that
// is renamed into place, so a reader never sees half a file.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// `values` in `dtype` (kF32, kF16 or kBF16; F16 and BF16 rounded to nearest even, as torch's
// `.to()`), as the bytes a TensorToWrite points at. Other dtypes: empty.
std::vector<uint8_t> EncodeFloats(const std::vector<float>& values, DType dtype);

// IEEE half from float, rounding to nearest even; overflow gives infinity, NaN stays NaN.
uint16_t F32ToF16(float f);

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_SAFETENSORS_WRITER_H_
