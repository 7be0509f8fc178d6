#include "services/worker/model/safetensors_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace phi::worker::model {

uint16_t F32ToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds past the largest half, 65504
  if (x >= 0x38800000u) {                       // a normal half (>= 2^-14)
    const uint32_t mant = x & 0x7fffffu;
    uint32_t h = (((x >> 23) - 127 + 15) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
    return static_cast<uint16_t>(sign | h);
  }
  if (x <= 0x33000000u) return sign;  // <= 2^-25: half of the smallest subnormal rounds to even (0)
  // A subnormal half: units of 2^-24.
  const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - (x >> 23);
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

std::vector<uint8_t> EncodeFloats(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> out;
  if (dtype == DType::kF32) {
    out.resize(values.size() * 4);
    if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
    return out;
  }
  if (dtype != DType::kF16 && dtype != DType::kBF16) return out;
  out.resize(values.size() * 2);
  for (size_t k = 0; k < values.size(); ++k) {
    const uint16_t h = dtype == DType::kF16 ? F32ToF16(values[k]) : F32ToBf16(values[k]);
    std::memcpy(out.data() + 2 * k, &h, 2);
  }
  return out;
}

absl::StatusOr<std::string> SerializeSafetensors(const std::vector<TensorToWrite>& tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  std::set<absl::string_view> names;
  for (const TensorToWrite& t : tensors) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors tensor '", t.name, "': ", why));
    };
    if (t.name.empty() || t.name == "__metadata__") return bad("is not a usable tensor name");
    if (!names.insert(t.name).second) return bad("is named twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return bad("has a negative dimension");
      if (d > 0 && numel > (uint64_t{1} << 62) / static_cast<uint64_t>(d)) return bad("has too many elements");
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t want = numel * static_cast<uint64_t>(DTypeSize(t.dtype));
    if (t.bytes != want) {
      return bad(absl::StrCat("has ", t.bytes, " bytes, its shape of ", DTypeName(t.dtype), " needs ", want));
    }
    if (t.bytes > 0 && t.data == nullptr) return bad("has no data");
  }
  // The reference writer's order: larger elements first (each tensor stays aligned to its
  // element size after the 8-byte aligned header), then by name.
  std::vector<const TensorToWrite*> order;
  for (const TensorToWrite& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    const int sa = DTypeSize(a->dtype), sb = DTypeSize(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    header[t->name] = {{"dtype", std::string(DTypeName(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->bytes}}};
    offset += t->bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xffu));
  out += text;
  for (const TensorToWrite* t : order) out.append(static_cast<const char*>(t->data), t->bytes);
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto bytes = SerializeSafetensors(tensors, metadata);
  if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes.status().message()));
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create"));
    f.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      return absl::InternalError(absl::StrCat(tmp, ": write failed (disk full?)"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot rename ", tmp, " into place"));
  }
  return absl::OkStatus();
}

}  // namespace phi::worker::model
