// gloo::rendezvous::Store over the group's rendezvous service, so Gloo's full-mesh
// connect exchanges its TCP addresses through rank 0's KV store. Gloo's interface reports
// failures by exception; these are caught at the GlooCommunicator boundary.
#ifndef PHI_SERVICES_WORKER_PARALLEL_GLOO_STORE_H_
#define PHI_SERVICES_WORKER_PARALLEL_GLOO_STORE_H_

#include <chrono>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "services/worker/parallel/kv_client.h"

namespace phi::worker::parallel {

class GlooKvStore final : public gloo::rendezvous::Store {
 public:
  // Keys are stored as `<prefix><key>`; get/wait give up after `timeout`.
  GlooKvStore(KvClient* client, std::string prefix, std::chrono::milliseconds timeout)
      : client_(client), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  // Blocks until the key exists (Gloo's stores all do), at most the timeout.
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  KvClient* client_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_GLOO_STORE_H_
