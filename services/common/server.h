// The gRPC server bootstrap every service uses: listening port, grpc.health.v1
// health, server reflection, keepalive, message-size limits, RPC metrics, the
// /metrics HTTP endpoint with process metrics, and graceful shutdown on
// SIGTERM/SIGINT (stop accepting, let in-flight calls finish within a grace
// period, close the idle client connections as soon as no call is left, exit 0).
#ifndef PHI_SERVICES_COMMON_SERVER_H_
#define PHI_SERVICES_COMMON_SERVER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "services/common/active_calls.h"
#include "services/common/config.h"
#include "services/common/metrics/http_server.h"
#include "services/common/metrics/registry.h"

namespace phi::common {

struct ServerOptions {
  std::string service_name;          // "tokenizer", "worker", "gateway": logs and build info
  std::string host = "0.0.0.0";      // gRPC and metrics listen address
  int64_t port = 0;                  // gRPC port; 0 picks a free one
  int64_t metrics_port = 0;          // HTTP /metrics port; 0 picks a free one
  double shutdown_grace_seconds = 30;  // in-flight calls get this long after SIGTERM
  int64_t max_message_bytes = 64 << 20;  // largest message sent (and received, unless below)
  // Largest request message received; a larger one is refused with RESOURCE_EXHAUSTED by gRPC
  // before any handler parses it. 0: max_message_bytes. Services set their own bound, derived
  // from their request limits, when the flag leaves it at 0 (phi-tokenizer: --max-text-bytes).
  int64_t max_receive_message_bytes = 0;
  // Memory gRPC may hold for this server's connections and calls (read buffers, messages being
  // received). Past it, gRPC resets the newest streams (the client sees RESOURCE_EXHAUSTED):
  // gRPC buffers a whole message before it checks its size, so without this bound a client
  // sending a huge message still costs its size in memory. 0: 8 times the receive limit, at
  // least 64 MiB.
  int64_t grpc_memory_quota_bytes = 0;
  int64_t keepalive_time_seconds = 30;    // server pings idle connections this often
  int64_t keepalive_timeout_seconds = 10;  // and drops them when a ping is not answered
  std::string log_level = "info";
  // Health starts SERVING; services that must warm up (the worker) start
  // NOT_SERVING and call SetServing(true) when ready.
  bool start_serving = true;
  // TLS for the gRPC port (e.g. grpc::SslServerCredentials); null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
};

// Registers --host, --port, --metrics-port, --shutdown-grace-seconds,
// --max-message-bytes, --max-receive-message-bytes, --grpc-memory-quota-bytes, --keepalive-time-seconds, --keepalive-timeout-seconds and
// --log-level (env PHI_HOST, PHI_PORT, PHI_METRICS_PORT, ...), with the values
// already in `options` as defaults.
void AddServerFlags(FlagSet& flags, ServerOptions* options);

// The receive limit and memory quota `options` give the server (their 0 defaults resolved).
int64_t ReceiveLimit(const ServerOptions& options);
int64_t MemoryQuota(const ServerOptions& options);

// Applies --log-level and the service name to the logger.
void InitLogging(const ServerOptions& options);

class ServiceServer {
 public:
  // Builds and starts the server with `services` (sync or callback API), which
  // must outlive it. Fails, naming the address, when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<ServiceServer>> Start(const ServerOptions& options,
                                                              const std::vector<grpc::Service*>& services,
                                                              metrics::Registry* registry = &metrics::DefaultRegistry());
  ~ServiceServer();

  int port() const { return port_; }
  int metrics_port() const { return http_->port(); }
  grpc::Server* grpc_server() { return server_.get(); }

  // Health of the whole server (the empty service name, which Kubernetes'
  // gRPC probes and grpc_health_probe ask about).
  void SetServing(bool serving);
  bool serving() const { return serving_.load(); }

  // Health NOT_SERVING, stop accepting, wait up to the grace period for
  // in-flight calls, then cancel what is left. Once no call is left (and the
  // last one ended kReplyLinger ago), closes the client connections that stay
  // open idle, which gRPC's own Shutdown would wait for. Idempotent.
  void Shutdown();

  // How long after the last call ended Shutdown waits before closing idle
  // connections: the end of a reply may still sit in the socket buffers when
  // its call is done, and closing then could lose it.
  static constexpr std::chrono::milliseconds kReplyLinger{1000};

  // The calls being handled now (every service and method).
  const ActiveCalls& active_calls() const { return active_calls_; }

 private:
  ServiceServer() = default;
  // Run by a helper thread during Shutdown; returns early once `shutdown_returned` is true.
  void CloseIdleConnectionsWhenQuiet(const std::atomic<bool>& shutdown_returned);

  ServerOptions options_;
  ActiveCalls active_calls_;  // before server_: its interceptors report here until it is gone
  std::unique_ptr<grpc::ResourceQuota> memory_quota_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<metrics::MetricsHttpServer> http_;
  std::atomic<bool> serving_{false};
  std::atomic<bool> shut_down_{false};
  int port_ = 0;
};

// Blocks SIGTERM and SIGINT in this thread and every thread it starts later;
// call first thing in main() so that WaitForTerminationSignal receives them.
void BlockTerminationSignals();

// Turns off absl::Mutex's deadlock detector. Debian's Abseil is built without NDEBUG, so
// every absl::Mutex (gRPC locks one per call and several per message) runs it: a global graph
// lock on lock/unlock and on each mutex's destruction (~2% of the gateway's profile under 64
// streams, plus the contention). Release builds of Abseil skip it; so do our services.
void DisableMutexDeadlockDetection();

// Waits for SIGTERM or SIGINT and returns its number.
int WaitForTerminationSignal();

// The usual main() tail: logs the endpoints, waits for a signal, runs
// `before_shutdown` (e.g. stop admitting work), shuts down gracefully, returns 0.
int ServeUntilSignal(ServiceServer& server, const std::function<void()>& before_shutdown = {});

// The usual main() head: Start() or print the error and exit 1.
std::unique_ptr<ServiceServer> StartOrExit(const ServerOptions& options,
                                           const std::vector<grpc::Service*>& services);

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_SERVER_H_
