// The gateway's public HTTP/1.1 server: event-driven on Boost.Beast + Asio (Debian's Boost
// 1.81, header-only). A few I/O threads serve every connection; no thread is held per open
// connection or stream. Keep-alive and pipelining (requests on one connection are answered in
// order, one at a time); header, body, idle and write timeouts; bounds on connections, header
// bytes, body bytes (refused before the body is buffered) and response bytes queued per
// connection; TLS (1.2+) with --tls-cert / --tls-key.
//
// Errors the server answers itself (malformed HTTP 400, body too large 413, headers too large
// 431, slow header/body 408, over the connection bound 503) use OpenAI's error JSON shape and
// close the connection.
#ifndef PHI_SERVICES_GATEWAY_HTTP_SERVER_H_
#define PHI_SERVICES_GATEWAY_HTTP_SERVER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "services/gateway/http_tls.h"

namespace phi::gateway {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8080;  // 0 picks one (port() says which)
  int io_threads = 2;
  // Open connections, idle ones included; one over it gets 503 and is closed.
  int max_connections = 8192;
  size_t max_header_bytes = 16 << 10;  // request line + headers; over: 431
  size_t max_body_bytes = 8 << 20;     // Content-Length or chunked total; over: 413, before buffering
  // From the connection's first byte (or the previous response's end) to the end of the headers.
  double header_timeout_seconds = 10;
  // From the end of the headers to the end of the body.
  double body_timeout_seconds = 30;
  // A keep-alive connection with no request in progress is closed after this.
  double idle_timeout_seconds = 60;
  // A write that makes no progress for this long: the client is gone (its exchange is told).
  double write_timeout_seconds = 30;
  // Response bytes queued on one connection (a stream the client reads slower than it is
  // written): over it, Write() returns false and the connection is closed.
  size_t max_queued_response_bytes = 4 << 20;
  // Both set: HTTPS only; both empty: plain HTTP.
  HttpTlsFiles tls;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // as sent: "GET", "POST", ...
  std::string target;  // path and query as sent
  std::string path;    // target without the query
  HttpHeaders headers;
  std::string body;
  std::string remote;  // peer address "ip:port"
  // The first header of that name (case-insensitive); empty when absent.
  std::string_view Header(std::string_view name) const;
};

// One request and its response. Thread-safe: the handler may answer later, from any thread
// (gRPC's callback threads). Exactly one of Respond() or StartStream() ... End() answers it.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequest& request() const = 0;

  // A whole response with Content-Length. `content_type` e.g. "application/json".
  virtual void Respond(int status, std::string_view content_type, std::string body, HttpHeaders extra = {}) = 0;

  // A streamed response (Transfer-Encoding: chunked): the status line and headers go out now;
  // each Write() is one chunk. Write() returns false once the stream is over for the client
  // (gone, write timeout, queue over max_queued_response_bytes): stop producing then. End()
  // sends the last chunk; the connection then serves the next request (keep-alive).
  virtual void StartStream(int status, std::string_view content_type, HttpHeaders extra = {}) = 0;
  virtual bool Write(std::string data) = 0;
  virtual void End() = 0;

  // Called once, on an I/O thread, when the client goes away (or the server stops) before the
  // response was fully written: connection closed or reset, write timeout, queue overflow.
  // A callback set after that happened runs at once on the calling thread.
  virtual void OnClientGone(std::function<void()> callback) = 0;
  virtual bool client_gone() const = 0;
};

// Called on an I/O thread for each complete request; must not block (start work and answer
// later through the exchange).
using HttpHandler = std::function<void(std::shared_ptr<HttpExchange>)>;

// What the server refused or cut, for metrics (phi_gateway_http_rejected_total{reason}):
// "connection_limit", "header_too_large", "body_too_large", "header_timeout", "body_timeout",
// "bad_request", "write_timeout", "queue_overflow", "tls_handshake".
using HttpRejectCounter = std::function<void(std::string_view reason)>;

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options, HttpHandler handler,
                                                          HttpRejectCounter on_reject = {});
  ~HttpServer();  // Stop(), then joins the I/O threads

  int port() const;
  bool tls() const;
  int open_connections() const;
  // Requests handed to the handler whose response has not finished.
  int active_exchanges() const;

  // Closes the listening socket; idle keep-alive connections are closed, busy ones close after
  // their response (Connection: close).
  void StopAccepting();
  // Closes every connection now; exchanges still answering see OnClientGone.
  void Stop();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_SERVER_H_
