#include "services/gateway/auth.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace phi::gateway {

AdmissionLease::~AdmissionLease() {
  if (auth_) auth_->Release(key_);
}

absl::StatusOr<std::unique_ptr<Auth>> Auth::Create(const std::string& file, const std::string& env_keys,
                                                   int max_concurrent_per_key) {
  auto a = std::make_unique<Auth>();
  a->max_concurrent_ = max_concurrent_per_key;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) return absl::NotFoundError(absl::StrCat("--api-keys-file: cannot read '", file, "'"));
    std::string line;
    while (std::getline(in, line)) {
      absl::string_view k = absl::StripAsciiWhitespace(line);
      if (!k.empty() && k[0] != '#') a->keys_.emplace(k);
    }
    if (a->keys_.empty()) return absl::InvalidArgumentError(absl::StrCat("--api-keys-file: '", file, "' has no keys"));
  }
  for (absl::string_view k : absl::StrSplit(env_keys, ',', absl::SkipWhitespace())) {
    a->keys_.emplace(absl::StripAsciiWhitespace(k));
  }
  return a;
}

absl::Status Auth::Check(const std::string& authorization) const {
  if (keys_.empty()) return absl::OkStatus();
  absl::string_view v = absl::StripAsciiWhitespace(authorization);
  if (!absl::ConsumePrefix(&v, "Bearer ") && !absl::ConsumePrefix(&v, "bearer ")) {
    return absl::UnauthenticatedError("authorization: expected 'Bearer <api key>'");
  }
  if (keys_.find(absl::StripAsciiWhitespace(v)) == keys_.end()) {
    return absl::UnauthenticatedError("authorization: unknown API key");
  }
  return absl::OkStatus();
}

absl::StatusOr<AdmissionLease> Auth::Admit(const std::string& authorization) {
  if (absl::Status s = Check(authorization); !s.ok()) return s;
  std::string key;
  if (!keys_.empty()) {
    absl::string_view v = absl::StripAsciiWhitespace(authorization);
    v.remove_prefix(7);
    key = std::string(absl::StripAsciiWhitespace(v));
  }
  if (max_concurrent_ <= 0) return AdmissionLease();
  std::lock_guard<std::mutex> l(mu_);
  int& n = active_[key];
  if (n >= max_concurrent_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this API key already has ", n, " requests running (--max-concurrent-per-key ", max_concurrent_,
                     "); retry when one ends"));
  }
  ++n;
  return AdmissionLease(this, key);
}

void Auth::Release(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  if (--active_[key] <= 0) active_.erase(key);
}

}  // namespace phi::gateway
