#include "services/worker/service/stream_write_pool.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

namespace phi::worker {

struct StreamWritePool::Queue {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::weak_ptr<Task>> tasks;  // under mu
  bool stop = false;                       // under mu

  void Push(std::weak_ptr<Task> task) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stop) return;
      was_empty = tasks.empty();
      tasks.push_back(std::move(task));
    }
    // A non-empty queue already has a thread woken for it, or a busy thread that looks at the
    // queue again before it sleeps: one wake-up per batch, not per token.
    if (was_empty) cv.notify_one();
  }
};

StreamWritePool::StreamWritePool(int num_threads) : queue_(std::make_shared<Queue>()) {
  num_threads = std::max(1, num_threads);
  threads_.reserve(num_threads);
  for (int i = 0; i < num_threads; ++i) threads_.emplace_back([q = queue_] { Loop(q); });
}

StreamWritePool::~StreamWritePool() {
  {
    std::lock_guard<std::mutex> lock(queue_->mu);
    queue_->stop = true;
    queue_->tasks.clear();
  }
  queue_->cv.notify_all();
  for (std::thread& t : threads_) t.join();
}

std::function<void()> StreamWritePool::Notifier(std::weak_ptr<Task> task) const {
  return [queue = queue_, task = std::move(task)] { queue->Push(task); };
}

void StreamWritePool::Loop(const std::shared_ptr<Queue>& queue) {
  std::vector<std::weak_ptr<Task>> batch;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(queue->mu);
      queue->cv.wait(lock, [&] { return queue->stop || !queue->tasks.empty(); });
      if (queue->stop) return;
      batch.swap(queue->tasks);
    }
    for (std::weak_ptr<Task>& weak : batch) {
      if (std::shared_ptr<Task> task = weak.lock()) task->Run();
    }
    batch.clear();
  }
}

}  // namespace phi::worker
