#include "services/worker/parallel/gloo_store.h"

#include <gloo/common/error.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace phi::worker::parallel {

void GlooKvStore::set(const std::string& key, const std::vector<char>& data) {
  auto status = client_->Set(prefix_ + key, std::string(data.begin(), data.end()));
  if (!status.ok()) throw gloo::IoException(status.ToString());
}

std::vector<char> GlooKvStore::get(const std::string& key) {
  wait({key}, timeout_);
  auto value = client_->Get(prefix_ + key);
  if (!value.ok()) throw gloo::IoException(value.status().ToString());
  return std::vector<char>(value->begin(), value->end());
}

void GlooKvStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const auto& key : keys) full.push_back(prefix_ + key);
  // Gloo passes kNoTimeout (0) when it has none: use ours rather than not waiting.
  auto missing = client_->Wait(full, timeout.count() > 0 ? timeout : timeout_);
  if (!missing.ok()) throw gloo::IoException(missing.status().ToString());
  if (!missing->empty()) {
    throw gloo::IoException(absl::StrCat("rendezvous: keys not set within ", timeout.count(),
                                         " ms: ", absl::StrJoin(*missing, ", ")));
  }
}

}  // namespace phi::worker::parallel
