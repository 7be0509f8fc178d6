// The HTTP side of every service: GET /metrics (Prometheus text format) and
// GET /healthz, on civetweb (Debian's libcivetweb). Services may add handlers
// (the gateway's OpenAI-compatible API uses its own server, not this one).
#ifndef PHI_SERVICES_COMMON_METRICS_HTTP_SERVER_H_
#define PHI_SERVICES_COMMON_METRICS_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/common/metrics/registry.h"

struct mg_context;
struct mg_connection;

namespace phi::metrics {

class MetricsHttpServer {
 public:
  // Listens on host:port (port 0 picks a free one). Fails with a message that
  // names the address when it cannot bind (e.g. the port is in use).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                                  Registry* registry);
  // Stops at once: civetweb's mg_stop waits for its master thread, which looks at the stop
  // flag only between 2 s polls of the listening socket, so the destructor connects to its
  // own port until mg_stop has returned (every service's SIGTERM exit was up to 2 s longer).
  ~MetricsHttpServer();

  int port() const { return port_; }

  // /healthz answers 200 "ok" while `healthy()` is true, else 503.
  void SetHealthCallback(std::function<bool()> healthy);

 private:
  MetricsHttpServer() = default;
  static int HandleMetrics(::mg_connection* conn, void* self);
  static int HandleHealth(::mg_connection* conn, void* self);

  mg_context* ctx_ = nullptr;
  Registry* registry_ = nullptr;
  std::string host_;
  int port_ = 0;
  std::function<bool()> healthy_;
};

}  // namespace phi::metrics

#endif  // PHI_SERVICES_COMMON_METRICS_HTTP_SERVER_H_
