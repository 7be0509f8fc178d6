#include "services/gateway/cancel_watcher.h"

namespace phi::gateway {

CancelWatcher::CancelWatcher(std::chrono::milliseconds period) : period_(period), thread_([this] { Loop(); }) {}

CancelWatcher::~CancelWatcher() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

CancelWatcher::Guard CancelWatcher::Watch(std::function<bool()> is_gone, Cancellation* cancel) {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t id = next_++;
  entries_.emplace(id, std::make_pair(std::move(is_gone), cancel));
  return Guard(this, id);
}

void CancelWatcher::Remove(uint64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  entries_.erase(id);
}

void CancelWatcher::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!cv_.wait_for(l, period_, [this] { return stop_; })) {
    // Under the lock: Remove waits, so a Cancellation is never used after its request ended.
    for (auto& [id, e] : entries_) {
      if (!e.second->cancelled() && e.first()) e.second->Cancel();
    }
  }
}

}  // namespace phi::gateway
