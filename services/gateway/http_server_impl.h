// The HTTP server's shared state (internal to the phi_gateway_http_server target): the listener,
// the I/O threads and the open connections (HttpServer::Impl, http_server.cc), which each
// connection (http_session.cc) reads its options and counters from.
#ifndef PHI_SERVICES_GATEWAY_HTTP_SERVER_IMPL_H_
#define PHI_SERVICES_GATEWAY_HTTP_SERVER_IMPL_H_

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "services/common/logging.h"
#include "services/gateway/http_exchange.h"
#include "services/gateway/http_server.h"

namespace phi::gateway {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;

namespace http_internal {

// Debian's Abseil has its own string_view.
inline absl::string_view Av(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace http_internal

class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& options, HttpHandler handler, HttpRejectCounter on_reject)
      : opts(options),
        handler(std::move(handler)),
        on_reject(std::move(on_reject)),
        ioc(std::max(1, options.io_threads)),
        work(asio::make_work_guard(ioc)),
        acceptor(asio::make_strand(ioc)),
        accept_retry(acceptor.get_executor()) {}

  absl::Status Listen();
  void Accept();
  void OnAccept(const ErrorCode& ec, tcp::socket socket);
  void StopAccepting();
  void Stop();
  void Join();
  // Stops accepting and closes the listening socket (on its strand).
  void CloseListener();
  // The sessions still open; with `stop`, marks the server stopped under the same lock.
  std::vector<std::shared_ptr<http_internal::SessionBase>> LiveSessions(bool stop);

  void Reject(std::string_view reason) {
    if (!on_reject) return;
    try {
      on_reject(reason);
    } catch (...) {
      PHI_LOG(ERROR, "http_reject_counter_threw");
    }
  }

  // A session closed: forget it (Stop waits for all of them).
  void Unregister(http_internal::SessionBase* session, bool counted) {
    if (counted) open.fetch_sub(1, std::memory_order_relaxed);
    std::lock_guard lock(mu);
    sessions.erase(session);
    if (sessions.empty()) cv.notify_all();
  }

  const HttpServerOptions opts;
  const HttpHandler handler;
  const HttpRejectCounter on_reject;
  // Declared before the io_context: TLS streams destroyed with it still use the context.
  std::unique_ptr<asio::ssl::context> ssl;
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  tcp::acceptor acceptor;
  asio::steady_timer accept_retry;
  std::chrono::steady_clock::time_point last_accept_error_log;  // on the acceptor's strand
  std::vector<std::thread> threads;
  int port = 0;
  std::atomic<int> open{0};
  std::atomic<int> active{0};
  std::atomic<bool> accepting{true};

  std::mutex mu;
  std::condition_variable cv;
  bool stopped = false;
  std::unordered_map<http_internal::SessionBase*, std::weak_ptr<http_internal::SessionBase>> sessions;
};

namespace http_internal {

// A connection accepted by `server` (TLS when the server has a context), not started yet.
// `reject`: over the connection bound, answered 503 and closed.
std::shared_ptr<SessionBase> MakeSession(HttpServer::Impl* server, tcp::socket socket, bool reject,
                                         std::string remote);

}  // namespace http_internal
}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_SERVER_IMPL_H_
