// Forming a tensor-parallel worker group: the ranks of `--rank R --world-size N --leader
// HOST:PORT` (as a Kubernetes StatefulSet passes them) meet at rank 0's rendezvous
// service, which rank 0 starts on the leader port. Every rank marks its arrival; rank 0
// waits for all and answers "ready", or after the join timeout fails the group naming the
// ranks that never came. Then the ranks open the Gloo mesh (the host-side channel that
// carries step broadcasts, and the CPU backend's all-reduces); the NCCL communicator of a
// GPU group is made from the same store (NcclCommunicator::Create(&group->store(), ...)).
#ifndef PHI_SERVICES_WORKER_PARALLEL_WORKER_GROUP_H_
#define PHI_SERVICES_WORKER_PARALLEL_WORKER_GROUP_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/worker/parallel/communicator.h"
#include "services/worker/parallel/kv_client.h"
#include "services/worker/parallel/rendezvous_server.h"

namespace phi::worker::parallel {

struct GroupOptions {
  int rank = 0;
  int world_size = 1;
  // host:port of rank 0's rendezvous service (rank 0 listens on its port, all interfaces).
  std::string leader = "127.0.0.1:29500";
  // The address the other ranks reach this one at for Gloo's TCP pairs.
  std::string hostname = "127.0.0.1";
  // Every rank must arrive within this of the leader's start.
  std::chrono::milliseconds join_timeout{60000};
  // Bound on each collective: a peer silent this long is taken as dead.
  std::chrono::milliseconds op_timeout{5000};
};

// Parses "host:port" with a port in 1..65535 (INVALID_ARGUMENT naming `flag` otherwise).
absl::Status ValidateLeaderAddress(const std::string& leader, const std::string& flag = "--leader");

class WorkerGroup {
 public:
  // Blocks until the group formed (all ranks connected) or fails: DEADLINE_EXCEEDED naming
  // the missing rank(s), UNAVAILABLE when the leader cannot be reached or listened on.
  static absl::StatusOr<std::unique_ptr<WorkerGroup>> Join(const GroupOptions& options);
  ~WorkerGroup();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  bool is_leader() const { return options_.rank == 0; }
  const GroupOptions& options() const { return options_; }
  // The host-side communicator (Gloo over TCP; local for a group of one).
  Communicator& host() { return *host_; }
  // The rendezvous store, for later exchanges (the NCCL unique id).
  KvClient& store() { return *store_; }

 private:
  explicit WorkerGroup(const GroupOptions& options) : options_(options) {}
  absl::Status Meet();

  GroupOptions options_;
  std::unique_ptr<RendezvousServer> server_;  // rank 0 only
  std::unique_ptr<KvClient> store_;
  std::unique_ptr<Communicator> host_;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_WORKER_GROUP_H_
