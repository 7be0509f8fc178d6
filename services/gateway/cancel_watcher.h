// A client that goes away must cancel the worker stream even while no token is
// flowing (a long prefill). The sync gRPC API has no callback for that, so one
// thread polls the registered server contexts and cancels their requests.
#ifndef PHI_SERVICES_GATEWAY_CANCEL_WATCHER_H_
#define PHI_SERVICES_GATEWAY_CANCEL_WATCHER_H_

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "services/gateway/generator.h"

namespace phi::gateway {

class CancelWatcher {
 public:
  explicit CancelWatcher(std::chrono::milliseconds period = std::chrono::milliseconds(20));
  ~CancelWatcher();

  // While the returned guard lives, `is_gone()` is polled and `cancel` cancelled
  // once it returns true.
  class Guard {
   public:
    Guard(CancelWatcher* w, uint64_t id) : w_(w), id_(id) {}
    ~Guard() { w_->Remove(id_); }

   private:
    CancelWatcher* w_;
    uint64_t id_;
  };
  Guard Watch(std::function<bool()> is_gone, Cancellation* cancel);

 private:
  void Remove(uint64_t id);
  void Loop();

  std::chrono::milliseconds period_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_ = 0;
  std::map<uint64_t, std::pair<std::function<bool()>, Cancellation*>> entries_;
  std::thread thread_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_CANCEL_WATCHER_H_
