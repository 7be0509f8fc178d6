#include "services/gateway/lora_request.h"

#include "absl/strings/ascii.h"
#include "services/gateway/openai_json.h"

namespace phi::gateway {

absl::Status ValidateLoraName(std::string_view name) {
  constexpr char kRule[] = "1 to 128 bytes of [A-Za-z0-9._-]";
  if (name.empty()) return Invalid(Cat("lora_name: required, ", kRule));
  if (name.size() > kMaxLoraNameBytes) return Invalid(Cat("lora_name: ", name.size(), " bytes, must be ", kRule));
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return Invalid(Cat("lora_name: '", Printable(name), "' has '", Printable(name.substr(i, 1)), "' at byte ", i,
                         ", must be ", kRule));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLoraPath(std::string_view path) {
  if (path.empty()) return Invalid("lora_path: required, the adapter's folder on the workers (1 to 4096 bytes)");
  if (path.size() > kMaxLoraPathBytes) {
    return Invalid(Cat("lora_path: ", path.size(), " bytes, at most ", kMaxLoraPathBytes));
  }
  if (path.find('\0') != std::string_view::npos) return Invalid("lora_path: contains a NUL byte");
  return absl::OkStatus();
}

namespace {

// One of the body's string fields; the bound is checked after (the name's message says more).
absl::Status ReadField(od::value& v, std::string_view key, size_t max_bytes, std::string* out) {
  bool is_null = false;
  if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok() || is_null) return s;
  return ReadBoundedString(v, key, max_bytes, out);
}

}  // namespace

absl::StatusOr<phi::v1::LoadLoraAdapterRequest> ParseLoadLoraAdapterRequest(std::string_view body,
                                                                            const OpenAiRequestLimits& limits) {
  phi::v1::LoadLoraAdapterRequest out;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    if (key == "lora_name") return ReadField(v, key, kMaxLoraNameBytes, out.mutable_lora_name());
    if (key == "lora_path") return ReadField(v, key, kMaxLoraPathBytes, out.mutable_lora_path());
    return Unknown("", key);
  });
  if (!st.ok()) return st;
  if (absl::Status s = ValidateLoraName(out.lora_name()); !s.ok()) return s;
  if (absl::Status s = ValidateLoraPath(out.lora_path()); !s.ok()) return s;
  return out;
}

absl::StatusOr<phi::v1::UnloadLoraAdapterRequest> ParseUnloadLoraAdapterRequest(std::string_view body,
                                                                                const OpenAiRequestLimits& limits) {
  phi::v1::UnloadLoraAdapterRequest out;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    if (key == "lora_name") return ReadField(v, key, kMaxLoraNameBytes, out.mutable_lora_name());
    return Unknown("", key);
  });
  if (!st.ok()) return st;
  if (absl::Status s = ValidateLoraName(out.lora_name()); !s.ok()) return s;
  return out;
}

}  // namespace phi::gateway
