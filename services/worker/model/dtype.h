// Element types of checkpoint tensors and the scalar conversions between them.
// BF16 is the top half of an IEEE float32; F16 is IEEE half. Conversions to BF16
// round to nearest even, like torch's `.to(torch.bfloat16)`.
#ifndef PHI_SERVICES_WORKER_MODEL_DTYPE_H_
#define PHI_SERVICES_WORKER_MODEL_DTYPE_H_

#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

namespace phi::worker::model {

enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
int DTypeSize(DType dtype);
// "F32", "BF16", ... as safetensors spells them.
absl::string_view DTypeName(DType dtype);
// Parses a safetensors dtype name; false if unknown.
bool ParseDType(absl::string_view name, DType* out);

inline float Bf16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  const uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding_bias) >> 16);
}

float F16ToF32(uint16_t h);

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_DTYPE_H_
