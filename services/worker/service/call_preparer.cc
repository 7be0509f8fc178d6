#include "services/worker/service/call_preparer.h"

#include <condition_variable>
#include <mutex>
#include <thread>

namespace phi::worker {

struct CallPreparer::State {
  std::mutex mu;
  std::condition_variable cv;
  int running = 0;  // under mu
  int max_running = 0;
};

CallPreparer::CallPreparer(int max_running) : state_(std::make_shared<State>()) {
  state_->max_running = max_running;
}

CallPreparer::~CallPreparer() {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->running == 0; });
}

bool CallPreparer::Run(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->running >= state_->max_running) return false;
    ++state_->running;
  }
  // Detached: the thread holds the state, and only touches it to say it is done.
  std::thread([state = state_, job = std::move(job)]() mutable {
    job();
    job = nullptr;  // what it holds goes before the destructor can return
    std::lock_guard<std::mutex> lock(state->mu);
    --state->running;
    state->cv.notify_all();
  }).detach();
  return true;
}

}  // namespace phi::worker
