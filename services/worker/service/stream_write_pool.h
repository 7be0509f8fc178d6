// A few threads that take a generation stream's new output off the engine thread. The engine
// thread calls a stream's output notifier once per token per sequence per step (256 calls a
// step at the GPU target); a notifier from this pool only queues the stream, and a pool thread
// builds the message and starts the gRPC write. A queue of streams per wake-up, not a thread
// per stream: the sync API's thread-per-stream woke 256 threads a step.
#ifndef PHI_SERVICES_WORKER_SERVICE_STREAM_WRITE_POOL_H_
#define PHI_SERVICES_WORKER_SERVICE_STREAM_WRITE_POOL_H_

#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace phi::worker {

class StreamWritePool {
 public:
  // What a pool thread runs for a queued stream.
  class Task {
   public:
    virtual ~Task() = default;
    virtual void Run() = 0;
  };

  explicit StreamWritePool(int num_threads);
  // Stops and joins the threads; what is still queued is dropped (its calls are gone: the
  // gRPC server shuts down before the service that owns this pool).
  ~StreamWritePool();
  StreamWritePool(const StreamWritePool&) = delete;
  StreamWritePool& operator=(const StreamWritePool&) = delete;

  // A notifier for RequestStream::set_output_notifier: queues `task` (a lock, a push, and a
  // futex wake only when the queue was empty). A task already destroyed when its turn comes is
  // skipped, and the notifier may outlive the pool (it then does nothing): the engine can push
  // after a call has finished or after the service is gone.
  std::function<void()> Notifier(std::weak_ptr<Task> task) const;

  int num_threads() const { return static_cast<int>(threads_.size()); }

 private:
  struct Queue;
  static void Loop(const std::shared_ptr<Queue>& queue);

  std::shared_ptr<Queue> queue_;  // shared with every notifier
  std::vector<std::thread> threads_;
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_STREAM_WRITE_POOL_H_
