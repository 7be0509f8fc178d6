#include "services/worker/parallel/follower.h"

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/parallel/leader_runner.h"
#include "services/worker/parallel/step_channel.h"
#include "services/worker/parallel/step_codec.h"

namespace phi::worker::parallel {

namespace {

// What this rank installs for a kSetAdapter: the adapter read from its folder, null to clear.
absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>> AdapterFor(const StepMessage& message,
                                                                    const AdapterLoader& load_adapter) {
  if (message.adapter_path.empty()) return nullptr;
  if (!load_adapter) return absl::FailedPreconditionError("this rank was started without an adapter loader");
  return load_adapter(message.adapter_name, message.adapter_path);
}

}  // namespace

absl::Status RunFollower(worker::ModelRunner* shard, Communicator* host, FollowerStats* stats,
                         const std::atomic<bool>* stop, AdapterLoader load_adapter) {
  if (host->rank() == 0) return absl::FailedPreconditionError("RunFollower: rank 0 is the leader");
  StepChannel channel(host);
  worker::StepLogits logits;
  uint64_t expected_index = 0;
  while (stop == nullptr || !stop->load()) {
    auto bytes = channel.Receive();
    if (!bytes.ok()) {
      return absl::UnavailableError(absl::StrCat("follower rank ", host->rank(), ": lost the leader: ",
                                                 bytes.status().message()));
    }
    PHI_ASSIGN_OR_RETURN(const StepMessage message, DecodeStepMessage(*bytes));
    switch (message.kind) {
      case StepKind::kHeartbeat:
        // The leader's heartbeat ends in a barrier (see LeaderRunner::HeartbeatLoop).
        if (auto s = host->Barrier(); !s.ok()) {
          return absl::UnavailableError(absl::StrCat("follower rank ", host->rank(), ": heartbeat: ", s.message()));
        }
        if (stats) ++stats->heartbeats;
        break;
      case StepKind::kShutdown:
        return absl::OkStatus();
      case StepKind::kAllocateKv:
        // Always fatal here: the leader's own allocation may have succeeded (ranks can differ
        // in free memory), and a rank without a cache cannot take part in any later step.
        if (auto s = shard->AllocateKvCache(message.kv); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat("follower rank ", host->rank(), ": KV cache of ",
                                                     message.kv.num_blocks, " blocks: ", s.message()));
        }
        break;
      case StepKind::kSetAdapter: {
        absl::StatusOr<absl::Status> group =
            InstallAdapterOnGroup(shard, host, message.adapter_slot, AdapterFor(message, load_adapter));
        if (!group.ok()) {
          return absl::UnavailableError(absl::StrCat("follower rank ", host->rank(), ": adapter slot ",
                                                     message.adapter_slot, ": ", group.status().message()));
        }
        if (stats) ++stats->adapters_set;
        break;
      }
      case StepKind::kStep: {
        // A gap means this rank's KV cache no longer matches the leader's.
        if (message.step_index != expected_index) {
          return absl::DataLossError(absl::StrCat("follower rank ", host->rank(), ": step ", message.step_index,
                                                  " arrived, expected ", expected_index));
        }
        ++expected_index;
        auto s = shard->Step(message.batch(), &logits);
        if (!s.ok() && IsGroupFatal(s)) {
          return absl::Status(s.code(), absl::StrCat("follower rank ", host->rank(), " step ",
                                                     message.step_index, ": ", s.message()));
        }
        if (stats) ++stats->steps;
        break;
      }
    }
  }
  return absl::CancelledError(absl::StrCat("follower rank ", host->rank(), ": stopped"));
}

}  // namespace phi::worker::parallel
