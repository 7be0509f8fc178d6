// Rank 0's side of the rendezvous: a small gRPC key-value service (phi.v1.internal.
// RendezvousService) on the address the other ranks know as --leader HOST:PORT. It lives
// as long as the group: Gloo's store, the NCCL unique id and arrival marks go through it.
#ifndef PHI_SERVICES_WORKER_PARALLEL_RENDEZVOUS_SERVER_H_
#define PHI_SERVICES_WORKER_PARALLEL_RENDEZVOUS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/worker/parallel/kv_store.h"

namespace grpc {
class Server;
}

namespace phi::worker::parallel {

class RendezvousServer {
 public:
  // Listens on `listen_address` ("0.0.0.0:29500"; port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<RendezvousServer>> Start(const std::string& listen_address);
  ~RendezvousServer();  // Shutdown()

  int port() const { return port_; }
  KvStore& store() { return store_; }
  // Wakes pending Waits and stops serving. Idempotent.
  void Shutdown();

 private:
  class Service;
  RendezvousServer();

  KvStore store_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_RENDEZVOUS_SERVER_H_
