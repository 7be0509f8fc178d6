// Communicator over Gloo's TCP transport (Debian libgloo-dev): host memory, float32 sums.
// Ranks find each other through the group's rendezvous store (GlooKvStore) and open a
// full mesh of TCP pairs. Gloo's timeout bounds every collective, and a peer whose socket
// closes fails the pending call at once, so a dead rank never hangs the others.
#ifndef PHI_SERVICES_WORKER_PARALLEL_GLOO_COMMUNICATOR_H_
#define PHI_SERVICES_WORKER_PARALLEL_GLOO_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/worker/parallel/communicator.h"
#include "services/worker/parallel/kv_client.h"

namespace gloo {
class Context;
}

namespace phi::worker::parallel {

struct GlooOptions {
  // The address other ranks reach this one at (the pod IP or hostname; loopback in tests).
  std::string hostname = "127.0.0.1";
  // Bound on connecting the mesh and on each collective.
  std::chrono::milliseconds timeout{5000};
  // Key prefix in the rendezvous store (several communicators can share one store).
  std::string store_prefix = "gloo/";
};

class GlooCommunicator final : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(KvClient* store, int rank,
                                                                  int world_size,
                                                                  const GlooOptions& options);
  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string name() const override { return "gloo-tcp"; }

  absl::Status AllReduceSum(void* data, size_t count, DataType dtype) override;
  using Communicator::AllReduceSum;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank) override;
  absl::Status Barrier() override;

 private:
  GlooCommunicator(int rank, int world_size, std::chrono::milliseconds timeout);
  // Runs a Gloo call, turning its exceptions into a status that sticks: after a transport
  // failure the mesh is unusable.
  template <typename Fn>
  absl::Status Guard(const char* op, Fn&& fn);

  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<gloo::Context> context_;
  absl::Status broken_;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_GLOO_COMMUNICATOR_H_
