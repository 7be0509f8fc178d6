#include "services/gateway/stop_matcher.h"

#include <algorithm>

namespace phi::gateway {

StopMatcher::StopMatcher(std::vector<std::string> stops, bool include_stop) : include_stop_(include_stop) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string StopMatcher::Feed(const std::string& delta, bool can_stop) {
  if (stopped_) return "";
  pending_ += delta;
  std::string out;
  if (stops_.empty()) {
    out.swap(pending_);
    pending_offset_ += out.size();
    return out;
  }
  if (can_stop) {
    // Earliest match wins (what a reader of the whole text would see first); it must end
    // past the guarded text.
    size_t best = std::string::npos, best_len = 0;
    for (const auto& s : stops_) {
      const size_t from = guard_ >= s.size() ? guard_ - s.size() + 1 : 0;
      const size_t at = pending_.find(s, from);
      if (at < best) {
        best = at;
        best_len = s.size();
      }
    }
    if (best != std::string::npos) {
      stopped_ = true;
      match_end_ = pending_offset_ + best + best_len;
      out = pending_.substr(0, include_stop_ ? best + best_len : best);
      pending_.clear();
      return out;
    }
  } else {
    guard_ = pending_.size();
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
  const size_t emit = pending_.size() - hold;
  out = pending_.substr(0, emit);
  pending_.erase(0, emit);
  pending_offset_ += emit;
  guard_ = guard_ > emit ? guard_ - emit : 0;
  return out;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  std::string out;
  out.swap(pending_);
  pending_offset_ += out.size();
  guard_ = 0;
  return out;
}

}  // namespace phi::gateway
