// Runs the blocking part of starting a Generate call, compiling its grammar (up to
// --grammar-compile-timeout-seconds), on a thread of its own, so that gRPC's callback threads
// never wait for a compile. A thread per job rather than a fixed pool: a slow new schema must
// not hold up requests whose grammar is already cached (a hash lookup).
#ifndef PHI_SERVICES_WORKER_SERVICE_CALL_PREPARER_H_
#define PHI_SERVICES_WORKER_SERVICE_CALL_PREPARER_H_

#include <functional>
#include <memory>

namespace phi::worker {

class CallPreparer {
 public:
  explicit CallPreparer(int max_running);
  // Waits for every job still running.
  ~CallPreparer();
  CallPreparer(const CallPreparer&) = delete;
  CallPreparer& operator=(const CallPreparer&) = delete;

  // Starts `job` on a new thread; false (nothing started) when max_running jobs are running.
  bool Run(std::function<void()> job);

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the threads, which may outlive a notify
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_CALL_PREPARER_H_
