// Rank 0's ModelRunner for a tensor-parallel group: wraps the rank's shard runner and,
// before each call runs, broadcasts it (StepChannel) so that every follower makes the same
// call on its shard (RunFollower) — same batch, same block tables, so identical KV
// layouts. The engine above sees one ordinary ModelRunner. While idle it sends heartbeats
// (a broadcast and a barrier) so that followers can tell a quiet leader from a dead one and
// the leader notices a dead follower before the next request arrives.
//
// LoRA adapters: SetAdapter broadcasts the adapter's slot, name and folder; every follower
// reads the folder itself and installs its slice, and the ranks' outcomes are all-gathered
// (adapter_install.h): a rank that cannot read the adapter makes SetAdapter fail with its
// status, the slot empty on every rank, while the group keeps serving.
//
// Failure: when a broadcast or the shard's own collectives fail (a rank died or stalled
// past the communicator's timeout) the runner turns broken: that Step and every later one
// answer UNAVAILABLE, and `on_failure` runs once (the service marks itself NOT_SERVING,
// ends in-flight requests with UNAVAILABLE and exits non-zero so the orchestrator
// restarts the group).
#ifndef PHI_SERVICES_WORKER_PARALLEL_LEADER_RUNNER_H_
#define PHI_SERVICES_WORKER_PARALLEL_LEADER_RUNNER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/parallel/communicator.h"
#include "services/worker/parallel/step_channel.h"

namespace phi::worker::parallel {

struct LeaderOptions {
  // Idle heartbeat period; must be well under the followers' communicator timeout.
  std::chrono::milliseconds heartbeat_interval{500};
  // Runs once, on the thread that saw the failure, with the status that broke the group.
  std::function<void(const absl::Status&)> on_failure;
};

// Codes from the shard runner that mean the group is out of step or a rank is gone;
// other errors (INVALID_ARGUMENT from validation) happen identically on every rank.
bool IsGroupFatal(const absl::Status& status);

class LeaderRunner final : public worker::ModelRunner {
 public:
  // `shard` and `host` must outlive this; `host` is rank 0 of the group.
  LeaderRunner(worker::ModelRunner* shard, Communicator* host, LeaderOptions options);
  ~LeaderRunner() override;  // Shutdown()

  const worker::ModelShape& shape() const override { return shard_->shape(); }
  absl::Status AllocateKvCache(const worker::KvCacheSpec& spec) override;
  int64_t KvBlockBytes(int32_t block_size) const override { return shard_->KvBlockBytes(block_size); }
  absl::Status Step(const worker::StepBatch& batch, worker::StepLogits* out) override;
  // The shard's slots (every rank runs with the same --max-loras).
  int32_t max_adapter_slots() const override { return shard_->max_adapter_slots(); }
  // Followers read adapter->path themselves, bounded by the communicator's timeout
  // (--tp-timeout-ms): the leader waits for their outcome in an all-gather.
  absl::Status SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) override;

  // Tells the followers to exit 0 and stops heartbeats. Idempotent.
  void Shutdown();
  // OK while the group is whole; else the status that broke it.
  absl::Status health() const;
  uint64_t steps() const { return step_index_; }
  uint64_t broadcast_bytes() const;

 private:
  // With mu_ held: sends, runs, and turns broken on a fatal status.
  absl::Status SendLocked(const std::string& message);
  absl::Status Broken(absl::Status status);
  void HeartbeatLoop();

  worker::ModelRunner* shard_;
  Communicator* host_;
  LeaderOptions options_;
  StepChannel channel_;

  mutable std::mutex mu_;  // one message + shard call at a time, heartbeats included
  absl::Status broken_;
  bool shut_down_ = false;
  uint64_t step_index_ = 0;
  std::chrono::steady_clock::time_point last_send_ = std::chrono::steady_clock::now();

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread heartbeat_;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_LEADER_RUNNER_H_
