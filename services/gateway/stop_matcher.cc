#include "services/gateway/stop_matcher.h"

#include <algorithm>

namespace phi::gateway {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string StopMatcher::Feed(const std::string& delta) {
  if (stopped_) return "";
  pending_ += delta;
  if (stops_.empty()) return std::move(pending_);
  // Earliest match wins (what a reader of the whole text would see first).
  size_t best = std::string::npos;
  for (const auto& s : stops_) best = std::min(best, pending_.find(s));
  if (best != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, best);
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  return std::move(pending_);
}

}  // namespace phi::gateway
