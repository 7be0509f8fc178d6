#include "services/gateway/http_server.h"

#include <openssl/ssl.h>
#include <sys/resource.h>

#include <boost/asio/post.hpp>
#include <cstring>
#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/logging.h"
#include "services/gateway/http_server_impl.h"

namespace phi::gateway {

using http_internal::Av;
using http_internal::SessionBase;

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, Av(name))) return value;
  }
  return {};
}

namespace {

thread_local bool tl_io_thread = false;

void RaiseFdLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  lim.rlim_cur = lim.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    PHI_LOG(WARNING, "http_fd_limit").Str("error", std::strerror(errno));
  }
}

std::string RemoteAddress(const tcp::socket& socket) {
  ErrorCode ec;
  const tcp::endpoint ep = socket.remote_endpoint(ec);
  if (ec) return "";
  const std::string address = ep.address().to_string();
  return ep.address().is_v6() ? absl::StrCat("[", address, "]:", ep.port()) : absl::StrCat(address, ":", ep.port());
}

}  // namespace

absl::Status HttpServer::Impl::Listen() {
  ErrorCode ec;
  tcp::resolver resolver(ioc);
  const auto results = resolver.resolve(opts.host, std::to_string(opts.port),
                                        tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP: cannot resolve '", opts.host, "': ", ec.message()));
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  const std::string where = absl::StrCat(opts.host, ":", opts.port);
  if (acceptor.open(endpoint.protocol(), ec) || acceptor.set_option(tcp::acceptor::reuse_address(true), ec) ||
      acceptor.bind(endpoint, ec) || acceptor.listen(asio::socket_base::max_listen_connections, ec)) {
    return absl::UnavailableError(absl::StrCat("HTTP: cannot listen on ", where, ": ", ec.message()));
  }
  port = acceptor.local_endpoint(ec).port();
  return absl::OkStatus();
}

void HttpServer::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(ioc),
                        [this](const ErrorCode& ec, tcp::socket socket) { OnAccept(ec, std::move(socket)); });
}

void HttpServer::Impl::OnAccept(const ErrorCode& ec, tcp::socket socket) {
  if (!acceptor.is_open() || !accepting.load()) return;
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    // Out of file descriptors and the like: try again shortly rather than spin (and log once a second).
    const auto now = std::chrono::steady_clock::now();
    if (now - last_accept_error_log > std::chrono::seconds(1)) {
      last_accept_error_log = now;
      PHI_LOG(WARNING, "http_accept_failed").Str("error", ec.message());
    }
    accept_retry.expires_after(std::chrono::milliseconds(50));
    accept_retry.async_wait([this](const ErrorCode& wait_ec) {
      if (!wait_ec && acceptor.is_open()) Accept();
    });
    return;
  }
  ErrorCode ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  std::string remote = RemoteAddress(socket);
  const bool reject = open.load(std::memory_order_relaxed) >= opts.max_connections;
  if (reject) {
    Reject("connection_limit");
  } else {
    open.fetch_add(1, std::memory_order_relaxed);
  }
  std::shared_ptr<SessionBase> session =
      http_internal::MakeSession(this, std::move(socket), reject, std::move(remote));
  {
    std::lock_guard lock(mu);
    if (stopped) {
      if (!reject) open.fetch_sub(1, std::memory_order_relaxed);
      return;
    }
    sessions.emplace(session.get(), session);
  }
  session->PostStart();
  Accept();
}

void HttpServer::Impl::CloseListener() {
  accepting.store(false);
  asio::post(acceptor.get_executor(), [this] {
    ErrorCode ignored;
    acceptor.close(ignored);
    accept_retry.cancel();
  });
}

std::vector<std::shared_ptr<SessionBase>> HttpServer::Impl::LiveSessions(bool stop) {
  std::vector<std::shared_ptr<SessionBase>> live;
  std::lock_guard lock(mu);
  if (stop) stopped = true;
  for (auto& [raw, weak] : sessions) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  return live;
}

void HttpServer::Impl::StopAccepting() {
  CloseListener();
  for (auto& s : LiveSessions(/*stop=*/false)) s->PostStopAccepting();
}

void HttpServer::Impl::Stop() {
  CloseListener();
  std::vector<std::shared_ptr<SessionBase>> live = LiveSessions(/*stop=*/true);
  for (auto& s : live) s->PostClose();
  live.clear();
  if (tl_io_thread || threads.empty()) return;  // an I/O thread cannot wait for its own work
  std::unique_lock lock(mu);
  if (!cv.wait_for(lock, std::chrono::seconds(30), [this] { return sessions.empty(); })) {
    PHI_LOG(ERROR, "http_stop_timeout").Int("connections", static_cast<int64_t>(sessions.size()));
  }
}

void HttpServer::Impl::Join() {
  work.reset();
  ioc.stop();
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  threads.clear();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options, HttpHandler handler,
                                                              HttpRejectCounter on_reject) {
  if (!handler) return absl::InvalidArgumentError("HTTP: no request handler");
  if (options.tls.cert_file.empty() != options.tls.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  RaiseFdLimit();
  auto impl = std::make_unique<Impl>(options, std::move(handler), std::move(on_reject));
  if (!options.tls.cert_file.empty()) {
    impl->ssl = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    impl->ssl->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
    SSL_CTX_set_options(impl->ssl->native_handle(), SSL_OP_NO_RENEGOTIATION);
    if (absl::Status s = ConfigureSslContext(impl->ssl->native_handle(), options.tls); !s.ok()) return s;
  }
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  impl->Accept();
  Impl* raw = impl.get();
  const int n = std::max(1, options.io_threads);
  for (int i = 0; i < n; ++i) {
    impl->threads.emplace_back([raw] {
      tl_io_thread = true;
      for (;;) {
        try {
          raw->ioc.run();
          return;
        } catch (const std::exception& e) {
          PHI_LOG(ERROR, "http_io_thread_exception").Str("what", e.what());
        } catch (...) {
          PHI_LOG(ERROR, "http_io_thread_exception");
        }
      }
    });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  impl_->Stop();
  impl_->Join();
}

int HttpServer::port() const { return impl_->port; }
bool HttpServer::tls() const { return impl_->ssl != nullptr; }
int HttpServer::open_connections() const { return impl_->open.load(); }
int HttpServer::active_exchanges() const { return impl_->active.load(); }
void HttpServer::StopAccepting() { impl_->StopAccepting(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace phi::gateway
