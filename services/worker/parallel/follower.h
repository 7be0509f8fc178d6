// The loop a follower rank (1..N-1) runs instead of serving gRPC: receive each message
// the leader broadcasts and make the same call on this rank's shard runner, so its KV
// cache and collectives stay in step with rank 0. Returns OK when the leader shuts the
// group down, and the failure otherwise (leader or a peer gone, a stall past the
// communicator's timeout, a fatal shard error): the caller exits non-zero on it.
// kSetAdapter reads the adapter's folder with `load_adapter` and installs it in the shard
// (adapter_install.h); a failure there is reported to the leader, not fatal.
#ifndef PHI_SERVICES_WORKER_PARALLEL_FOLLOWER_H_
#define PHI_SERVICES_WORKER_PARALLEL_FOLLOWER_H_

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/parallel/adapter_install.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel {

struct FollowerStats {
  std::atomic<uint64_t> steps{0};
  std::atomic<uint64_t> heartbeats{0};
  std::atomic<uint64_t> adapters_set{0};  // kSetAdapter messages handled (installs and clears)
};

// `stop`, when set by another thread, ends the loop at the next message (SIGTERM).
// `load_adapter` null: every kSetAdapter that names a folder fails (FAILED_PRECONDITION).
absl::Status RunFollower(worker::ModelRunner* shard, Communicator* host, FollowerStats* stats = nullptr,
                         const std::atomic<bool>* stop = nullptr, AdapterLoader load_adapter = nullptr);

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_FOLLOWER_H_
