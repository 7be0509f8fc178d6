// Optional API keys and per-key concurrency limits. Keys come from a file (one
// per line, '#' comments) and/or PHI_API_KEYS (comma-separated); with none
// configured every request is admitted (and the limit applies to all together).
#ifndef PHI_SERVICES_GATEWAY_AUTH_H_
#define PHI_SERVICES_GATEWAY_AUTH_H_

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"

namespace phi::gateway {

class Auth;

// Holds one concurrency slot of a key until destroyed.
class AdmissionLease {
 public:
  AdmissionLease() = default;
  AdmissionLease(Auth* auth, std::string key) : auth_(auth), key_(std::move(key)) {}
  AdmissionLease(AdmissionLease&& o) noexcept : auth_(o.auth_), key_(std::move(o.key_)) { o.auth_ = nullptr; }
  AdmissionLease& operator=(AdmissionLease&&) = delete;
  ~AdmissionLease();

 private:
  Auth* auth_ = nullptr;
  std::string key_;
};

class Auth {
 public:
  // `file` may be empty; `env_keys` is PHI_API_KEYS's value. max_concurrent_per_key 0: no limit.
  static absl::StatusOr<std::unique_ptr<Auth>> Create(const std::string& file, const std::string& env_keys,
                                                      int max_concurrent_per_key);
  bool enabled() const { return !keys_.empty(); }
  // `authorization`: the header / metadata value ("Bearer KEY"). UNAUTHENTICATED
  // without a valid key; RESOURCE_EXHAUSTED when the key is at its limit.
  absl::StatusOr<AdmissionLease> Admit(const std::string& authorization);
  // Only checks the key (for calls that start no generation).
  absl::Status Check(const std::string& authorization) const;

 private:
  friend class AdmissionLease;
  void Release(const std::string& key);
  std::set<std::string, std::less<>> keys_;
  int max_concurrent_ = 0;
  std::mutex mu_;
  std::map<std::string, int> active_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_AUTH_H_
