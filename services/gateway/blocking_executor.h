// A fixed set of threads for the gateway's blocking work: calls to the tokenizer service
// (Encode, DecodeStream, DecodeEach) made on behalf of generations. gRPC's callback threads
// are few and must not block; a blocked one stalls every stream behind it (64 streams through
// a remote tokenizer lost 38% of their throughput that way).
#ifndef PHI_SERVICES_GATEWAY_BLOCKING_EXECUTOR_H_
#define PHI_SERVICES_GATEWAY_BLOCKING_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace phi::gateway {

class BlockingExecutor {
 public:
  explicit BlockingExecutor(int num_threads);
  // Runs the tasks already posted, then joins the threads.
  ~BlockingExecutor();
  BlockingExecutor(const BlockingExecutor&) = delete;
  BlockingExecutor& operator=(const BlockingExecutor&) = delete;

  // Runs `task` on one of the threads, in posting order of starts (not of ends); with
  // `ahead`, before every task still waiting.
  void Post(std::function<void()> task, bool ahead = false);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_BLOCKING_EXECUTOR_H_
