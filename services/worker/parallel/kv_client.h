// A rank's client of the rendezvous store on the leader (phi.v1.internal.
// RendezvousService). Calls wait for the leader to come up (wait_for_ready) but never past
// their deadline, so a leader that never starts gives an error naming its address.
#ifndef PHI_SERVICES_WORKER_PARALLEL_KV_CLIENT_H_
#define PHI_SERVICES_WORKER_PARALLEL_KV_CLIENT_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace phi::worker::parallel {

class KvClient {
 public:
  // `leader`: "host:port" of rank 0's rendezvous service. `rpc_timeout` bounds every call
  // (Wait adds its own timeout to it).
  KvClient(const std::string& leader, std::chrono::milliseconds rpc_timeout);
  ~KvClient();

  const std::string& leader() const { return leader_; }
  absl::Status Set(const std::string& key, const std::string& value);
  // NOT_FOUND when the key is not set.
  absl::StatusOr<std::string> Get(const std::string& key);
  // The keys still missing after `timeout` (empty: all present).
  absl::StatusOr<std::vector<std::string>> Wait(const std::vector<std::string>& keys,
                                                std::chrono::milliseconds timeout);
  absl::StatusOr<std::vector<std::string>> List(const std::string& prefix);

 private:
  class Impl;
  std::string leader_;
  std::chrono::milliseconds rpc_timeout_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_KV_CLIENT_H_
