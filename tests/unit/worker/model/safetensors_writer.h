// Test helper: writes safetensors files byte by byte so tests can also write broken ones.
#ifndef PHI_TESTS_UNIT_WORKER_MODEL_SAFETENSORS_WRITER_H_
#define PHI_TESTS_UNIT_WORKER_MODEL_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace phi::worker::model::testing {

struct RawTensor {
  std::string name;
  std::string dtype;  // "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

inline RawTensor F32Tensor(std::string name, std::vector<int64_t> shape, const std::vector<float>& v) {
  RawTensor t{std::move(name), "F32", std::move(shape), {}};
  t.bytes.resize(v.size() * 4);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// The header JSON the tensors would get, for tests that edit it before writing.
inline nlohmann::json HeaderFor(const std::vector<RawTensor>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& t : tensors) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  return h;
}

inline void WriteRaw(const std::string& path, const std::string& header, const std::vector<RawTensor>& tensors,
                     int64_t truncate_to = -1) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  for (const auto& t : tensors) out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  if (truncate_to >= 0) out.resize(static_cast<size_t>(truncate_to));
  std::ofstream(path, std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
}

inline void WriteSafetensors(const std::string& path, const std::vector<RawTensor>& tensors) {
  WriteRaw(path, HeaderFor(tensors).dump(), tensors);
}

}  // namespace phi::worker::model::testing

#endif  // PHI_TESTS_UNIT_WORKER_MODEL_SAFETENSORS_WRITER_H_
