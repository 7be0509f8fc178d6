#include "services/worker/engine/mask_filler.h"

#include <utility>

namespace phi::worker {

MaskFiller::~MaskFiller() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MaskFiller::Start(std::vector<Job> jobs) {
  if (jobs.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_ = std::move(jobs);
    pending_ = true;
    if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
  }
  cv_.notify_all();
}

void MaskFiller::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !pending_; });
}

void MaskFiller::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || pending_; });
    if (stop_) return;
    std::vector<Job> jobs = std::move(jobs_);
    lock.unlock();
    for (const Job& job : jobs) job.constraint->FillNextTokenMask(job.words);
    lock.lock();
    pending_ = false;
    cv_.notify_all();
  }
}

}  // namespace phi::worker
