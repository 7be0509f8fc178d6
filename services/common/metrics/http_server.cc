#include "services/common/metrics/http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"

namespace phi::metrics {
namespace {

std::once_flag g_civetweb_init;

void Reply(mg_connection* conn, int code, const char* reason, const char* content_type,
           const std::string& body) {
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            code, reason, content_type, body.size());
  mg_write(conn, body.data(), body.size());
}

// Opens and closes one TCP connection to host:port (loopback for a wildcard host).
void Poke(const std::string& host, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool any = host.empty() || host == "0.0.0.0";
  if (inet_pton(AF_INET, any ? "127.0.0.1" : host.c_str(), &addr.sin_addr) == 1) {
    (void)connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  }
  close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& host, int port,
                                                                          Registry* registry) {
  std::call_once(g_civetweb_init, [] { mg_init_library(0); });
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->registry_ = registry;
  server->host_ = host;
  // civetweb takes "addr:port"; IPv6 hosts need brackets... and civetweb's
  // own syntax; keep IPv4 / any here.
  const std::string listen = (host.empty() || host == "0.0.0.0") ? std::to_string(port)
                                                                  : absl::StrCat(host, ":", port);
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2", "enable_keep_alive", "no",
                           nullptr};
  mg_callbacks callbacks{};
  // Silence civetweb's own logging of bind errors; we report them ourselves.
  callbacks.log_message = [](const mg_connection*, const char*) { return 1; };
  server->ctx_ = mg_start(&callbacks, nullptr, options);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("metrics HTTP server cannot listen on ",
                                               host.empty() ? "0.0.0.0" : host, ":", port,
                                               " (port in use or not permitted)"));
  }
  mg_server_port ports[1];
  if (mg_get_server_ports(server->ctx_, 1, ports) >= 1) server->port_ = ports[0].port;
  mg_set_request_handler(server->ctx_, "/metrics$", &MetricsHttpServer::HandleMetrics, server.get());
  mg_set_request_handler(server->ctx_, "/healthz$", &MetricsHttpServer::HandleHealth, server.get());
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (ctx_ == nullptr) return;
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    while (!stopped.load()) {
      Poke(host_, port_);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  mg_stop(ctx_);
  stopped = true;
  waker.join();
}

void MetricsHttpServer::SetHealthCallback(std::function<bool()> healthy) { healthy_ = std::move(healthy); }

int MetricsHttpServer::HandleMetrics(mg_connection* conn, void* self) {
  auto* server = static_cast<MetricsHttpServer*>(self);
  const mg_request_info* info = mg_get_request_info(conn);
  if (std::string(info->request_method) != "GET" && std::string(info->request_method) != "HEAD") {
    Reply(conn, 405, "Method Not Allowed", "text/plain", "only GET\n");
    return 405;
  }
  Reply(conn, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", server->registry_->Serialize());
  return 200;
}

int MetricsHttpServer::HandleHealth(mg_connection* conn, void* self) {
  auto* server = static_cast<MetricsHttpServer*>(self);
  const bool ok = !server->healthy_ || server->healthy_();
  if (ok) {
    Reply(conn, 200, "OK", "text/plain", "ok\n");
    return 200;
  }
  Reply(conn, 503, "Service Unavailable", "text/plain", "not serving\n");
  return 503;
}

}  // namespace phi::metrics
