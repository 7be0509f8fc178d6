// The JSON layer of the OpenAI request parsers (openai_*_request.cc), internal to the
// phi_gateway_openai target: simdjson On Demand values read with their type and range checked,
// errors (INVALID_ARGUMENT) naming the parameter as the client spelled it, and the body's
// structure checked in one pass before it is parsed.
#ifndef PHI_SERVICES_GATEWAY_OPENAI_JSON_H_
#define PHI_SERVICES_GATEWAY_OPENAI_JSON_H_

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "services/gateway/openai_request.h"

namespace phi::gateway {

namespace od = simdjson::ondemand;
using simdjson::error_code;

// Debian's Abseil has its own string_view: std ones are converted for StrCat.
template <typename T>
auto Piece(const T& x) {
  if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    std::string_view v = x;
    return absl::string_view(v.data(), v.size());
  } else {
    return x;
  }
}
template <typename... T>
std::string Cat(const T&... x) {
  return absl::StrCat(Piece(x)...);
}

absl::Status Invalid(std::string_view m);

// simdjson's name of an error code ("TAPE_ERROR").
const char* ErrorName(error_code e);

absl::Status JsonError(error_code e);

// Client text in an error message: ASCII printable kept, everything else \xNN (the message goes
// into JSON and logs: no control bytes, no UTF-8 cut in half), at most `max` input bytes.
std::string Printable(std::string_view s, size_t max = 64);

std::string_view KindName(od::json_type t);

// The JSON type of `v` without consuming it; a token no type starts with is invalid JSON.
absl::Status TypeOf(od::value& v, od::json_type* t);

absl::Status WrongType(std::string_view name, std::string_view want, od::json_type got);

// Consumes `v` when it is null.
absl::Status ConsumeIfNull(od::value& v, bool* is_null);

absl::Status ReadBool(od::value& v, std::string_view name, bool* out);

// An integer in [lo, hi]; a number with a fraction or exponent (16.0, 1e3) is refused.
absl::Status ReadInt(od::value& v, std::string_view name, int64_t lo, int64_t hi, int64_t* out);

// A finite number in [lo, hi], or (lo, hi] when lo_open.
absl::Status ReadNumber(od::value& v, std::string_view name, double lo, double hi, bool lo_open, double* out);

absl::Status ReadString(od::value& v, std::string_view name, std::string_view* out);

absl::Status ReadBoundedString(od::value& v, std::string_view name, size_t max_bytes, std::string* out);

absl::Status GetArray(od::value& v, std::string_view name, std::string_view want, od::array* out);

absl::Status GetObject(od::value& v, std::string_view name, std::string_view want, od::object* out);

// Calls fn(index, element) for each element of an array.
absl::Status ForEachElement(od::array& a, absl::FunctionRef<absl::Status(size_t, od::value&)> fn);

// Calls fn(key, value) for each field of an object; a key seen twice is refused.
absl::Status ForEachField(od::object& o, std::string_view prefix,
                          absl::FunctionRef<absl::Status(std::string_view, od::value&)> fn);

absl::Status Unknown(std::string_view prefix, std::string_view key);

// `key` is one of `keys`.
bool IsOneOf(std::string_view key, std::span<const std::string_view> keys);

// An empty array is the only accepted value (tools, functions); `why` follows the name in the error.
absl::Status EmptyArrayOnly(od::value& v, std::string_view name, std::string_view why);
// An empty object is the only accepted value (metadata).
absl::Status EmptyObjectOnly(od::value& v, std::string_view name, std::string_view why);
// A string from `allowed`.
absl::Status StringIn(od::value& v, std::string_view name, std::initializer_list<std::string_view> allowed,
                      std::string_view why);

// Token ids in [0, int32 max] appended to `out`, at most `max_ids` (a completions prompt,
// /detokenize's tokens).
absl::Status ReadTokenIds(od::array& a, std::string_view name, size_t max_ids, std::vector<int32_t>* out);

// Parses `body` and calls fn(key, value) for each top-level field (keys unique, nulls included).
absl::Status ForEachTopLevelField(std::string_view body, const OpenAiRequestLimits& limits,
                                  absl::FunctionRef<absl::Status(std::string_view, od::value&)> fn);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_OPENAI_JSON_H_
