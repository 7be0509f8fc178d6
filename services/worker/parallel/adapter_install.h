// Installing a LoRA adapter on every rank of a tensor-parallel group at once. The leader
// broadcasts kSetAdapter (slot, name, folder); each follower reads the folder itself (the
// adapter's weights never cross the host channel) and every rank then calls
// InstallAdapterOnGroup, which installs what the rank obtained in its shard and all-gathers
// each rank's outcome. If any rank failed (a folder missing on its host, a slot it lacks),
// every rank clears the slot, so the group stays identical, and each rank gets the first
// failing rank's status: the leader answers the engine with it, the group keeps serving.
#ifndef PHI_SERVICES_WORKER_PARALLEL_ADAPTER_INSTALL_H_
#define PHI_SERVICES_WORKER_PARALLEL_ADAPTER_INSTALL_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel {

// Reads the adapter `name` from folder `path` for this rank's model (a follower's
// --max-lora-rank applies): lora::LoadPeftAdapter in phi-worker.
using AdapterLoader = std::function<absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>>(
    const std::string& name, const std::string& path)>;

// Collective: every rank calls it for the same slot, with the adapter it obtained (null:
// clear the slot) or why it could not. Returns the communicator's failure (the group is
// broken), else the group's outcome: OK, or the first failing rank's status with the message
// prefixed "rank R: " (the slot is then empty on every rank).
absl::StatusOr<absl::Status> InstallAdapterOnGroup(worker::ModelRunner* shard, Communicator* host, int32_t slot,
                                                   absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>> adapter);

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_ADAPTER_INSTALL_H_
