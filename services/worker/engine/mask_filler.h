// Fills the next-token masks of a step's constrained sequences on a thread of its own while
// the engine thread runs the forward pass. A matcher's state depends only on the tokens it
// has accepted, all known before the step, so its mask never waits for the logits; the
// engine only waits when the masks take longer than the forward pass.
#ifndef PHI_SERVICES_WORKER_ENGINE_MASK_FILLER_H_
#define PHI_SERVICES_WORKER_ENGINE_MASK_FILLER_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "services/worker/engine/token_constraint.h"

namespace phi::worker {

class MaskFiller {
 public:
  struct Job {
    TokenConstraint* constraint = nullptr;
    std::span<uint32_t> words;  // TokenMaskWords(vocab) words, owned by the sequence
  };

  MaskFiller() = default;
  MaskFiller(const MaskFiller&) = delete;
  MaskFiller& operator=(const MaskFiller&) = delete;
  ~MaskFiller();

  // Hands the jobs to the helper thread (started on first use) and returns at once. The
  // constraints and words must stay untouched by the caller until Wait() returns.
  void Start(std::vector<Job> jobs);
  // Blocks until every job of the last Start() is done; returns at once when none is pending.
  void Wait();

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Job> jobs_;  // under mu_
  bool pending_ = false;   // under mu_: jobs_ handed over and not finished
  bool stop_ = false;      // under mu_
  std::thread thread_;
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_MASK_FILLER_H_
