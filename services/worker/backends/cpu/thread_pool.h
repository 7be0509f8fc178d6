// A fixed pool of worker threads for data-parallel loops. Decode runs ~150 parallel
// regions per token, so workers spin briefly before sleeping: a condition-variable wake
// (~10-50 us) per region would cost a few percent of a 40 ms decode step.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_THREAD_POOL_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace phi::worker::cpu {

class ThreadPool {
 public:
  // `num_threads` counts the calling thread: 1 means no workers.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(thread_index) once on each of the num_threads threads (the caller is
  // index 0) and returns when all are done. Not reentrant.
  void Run(const std::function<void(int)>& fn);

  // Splits [0, n) into contiguous ranges whose bounds are multiples of `grain` (except
  // the end) and calls fn(begin, end) once for each, from any thread of the pool.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
};

}  // namespace phi::worker::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_THREAD_POOL_H_
