// One HTTP/1.1 connection of the gateway's server, plain or TLS, on its own strand: reads and
// parses requests within the header and body bounds, hands each to the handler, writes the
// responses in order (pipelining), enforces the header / body / idle / write timeouts, and
// closes with a linger so that the last response is not lost to a reset.
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <deque>
#include <exception>
#include <optional>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/common/logging.h"
#include "services/gateway/http_exchange.h"
#include "services/gateway/http_server_impl.h"

namespace phi::gateway::http_internal {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

constexpr size_t kReadChunk = 8 << 10;
// Most socket buffers one async_write_some gathers.
constexpr size_t kMaxWriteBuffers = 16;
// A closing connection keeps reading (and dropping) what the client still sends this long, so
// that our last response is not lost to a reset caused by unread request bytes.
constexpr double kLingerSeconds = 2;

std::string_view Sv(beast::string_view s) { return {s.data(), s.size()}; }

std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

std::string ErrorJson(int status, std::string_view message) {
  std::string out = R"({"error":{"message":)";
  log::AppendJsonString(&out, message);
  absl::StrAppend(&out, R"(,"type":")", status >= 500 ? "server_error" : "invalid_request_error",
                  R"(","param":null,"code":null}})");
  return out;
}

// Header values the handler gives must not split the response.
std::string_view NoNewlines(std::string_view s) { return s.substr(0, s.find_first_of("\r\n")); }

using TlsStream = asio::ssl::stream<tcp::socket>;

template <class Stream>
class Session final : public SessionBase {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  Session(HttpServer::Impl* server, tcp::socket socket, bool reject, std::string remote)
      : server_(server),
        opts_(server->opts),
        stream_(MakeStream(std::move(socket), server)),
        read_timer_(stream_.get_executor()),
        write_timer_(stream_.get_executor()),
        reject_(reject),
        remote_(std::move(remote)),
        rbuf_(new char[kReadChunk]) {}

  void PostStart() override {
    asio::post(stream_.get_executor(), [self = Self()] { self->Start(); });
  }
  void PostClose() override {
    asio::post(stream_.get_executor(), [self = Self()] { self->Close(); });
  }
  asio::any_io_executor executor() override { return stream_.get_executor(); }
  void PostStopAccepting() override {
    asio::post(stream_.get_executor(), [self = Self()] {
      if (self->closed_) return;
      self->close_after_ = true;
      if (self->phase_ == Phase::kIdle) self->Close();
    });
  }

  void ExHead(ExchangeImpl* ex, int status, std::string content_type, HttpHeaders extra, std::string body,
              bool whole) override {
    if (closed_ || ex != exchange_.get()) return;
    if (!whole && !chunked_) close_after_ = true;  // HTTP/1.0 stream: the end is the connection's end
    Queue(Head(status, content_type, extra, whole ? std::optional<size_t>(body.size()) : std::nullopt), false);
    if (whole) {
      if (!head_) Queue(std::move(body), false);
      end_queued_ = true;
    }
    StartWrite();
  }

  void ExData(ExchangeImpl* ex, std::string framed) override {
    if (closed_ || ex != exchange_.get()) return;
    if (head_) {
      ex->Written(framed.size());
      return;
    }
    Queue(std::move(framed), true);
    StartWrite();
  }

  void ExEnd(ExchangeImpl* ex) override {
    if (closed_ || ex != exchange_.get()) return;
    if (chunked_ && !head_) Queue("0\r\n\r\n", false);
    end_queued_ = true;
    StartWrite();
    MaybeFinishResponse();
  }

  void ExAbort(ExchangeImpl* ex, std::string_view reason) override {
    if (closed_ || ex != exchange_.get()) return;
    server_->Reject(reason);
    Close();
  }

 private:
  enum class Phase {
    kHeader,      // reading a request's start line and headers
    kBody,        // reading its body
    kResponding,  // a response (the handler's or ours) is in progress
    kIdle,        // keep-alive, between requests
    kLinger,      // response sent, closing
  };

  static Stream MakeStream(tcp::socket socket, HttpServer::Impl* server) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *server->ssl);
    } else {
      (void)server;
      return socket;
    }
  }

  std::shared_ptr<Session> Self() { return std::static_pointer_cast<Session>(shared_from_this()); }

  void Start() {
    if (closed_) return;
    phase_ = Phase::kHeader;
    ArmRead(opts_.header_timeout_seconds);
    if constexpr (kTls) {
      handshaking_ = true;
      stream_.async_handshake(asio::ssl::stream_base::server, [self = Self()](const ErrorCode& ec) {
        self->handshaking_ = false;
        if (self->closed_) return;
        if (ec) {
          self->server_->Reject("tls_handshake");
          self->Close();
          return;
        }
        self->Begin();
      });
    } else {
      Begin();
    }
  }

  void Begin() {
    if (reject_) {
      SendError(503, absl::StrCat("the gateway has ", server_->open.load(), " connections open, at most ",
                                  opts_.max_connections, " (--http-max-connections)"));
      return;
    }
    StartRead();
  }

  // ---- reading

  void StartRead() {
    if (closed_ || reading_ || handshaking_) return;
    // While a response is in progress, read only to notice a client that goes away; bytes of
    // pipelined requests wait in buffer_, up to about one header's worth.
    if (phase_ == Phase::kResponding && buffer_.size() > opts_.max_header_bytes) return;
    reading_ = true;
    stream_.async_read_some(asio::buffer(rbuf_.get(), kReadChunk),
                            [self = Self()](const ErrorCode& ec, size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(const ErrorCode& ec, size_t n) {
    reading_ = false;
    if (closed_) return;
    if (ec) {  // EOF, reset, TLS error: whatever was in progress, the client is gone
      Close();
      return;
    }
    if (phase_ == Phase::kLinger) {
      StartRead();
      return;
    }
    std::memcpy(buffer_.prepare(n).data(), rbuf_.get(), n);
    buffer_.commit(n);
    if (phase_ == Phase::kResponding) {
      StartRead();
      return;
    }
    if (phase_ == Phase::kIdle) {
      phase_ = Phase::kHeader;
      ArmRead(opts_.header_timeout_seconds);
    }
    Parse();
  }

  void Parse() {
    while (buffer_.size() > 0) {
      if (!parser_) {
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(std::min<size_t>(opts_.max_header_bytes, UINT32_MAX)));
        parser_->body_limit(static_cast<std::uint64_t>(opts_.max_body_bytes));
        parser_->eager(true);
      }
      beast::error_code ec;
      const size_t n = parser_->put(buffer_.data(), ec);
      buffer_.consume(n);
      if (ec == http::error::need_more) break;
      if (ec) {
        ParseError(ec);
        return;
      }
      if (phase_ == Phase::kHeader && parser_->is_header_done()) {
        phase_ = Phase::kBody;
        ArmRead(opts_.body_timeout_seconds);
        MaybeContinue();
      }
      if (parser_->is_done()) {
        Dispatch();
        return;
      }
      if (n == 0) break;
    }
    StartRead();
  }

  void MaybeContinue() {
    const auto& m = parser_->get();
    if (parser_->is_done() || m.version() < 11) return;
    if (!absl::EqualsIgnoreCase(Av(Sv(m[http::field::expect])), "100-continue")) return;
    Queue("HTTP/1.1 100 Continue\r\n\r\n", false);
    StartWrite();
  }

  void ParseError(const beast::error_code& ec) {
    if (ec == http::error::header_limit) {
      server_->Reject("header_too_large");
      SendError(431, absl::StrCat("headers: more than ", opts_.max_header_bytes, " bytes, at most ",
                                  opts_.max_header_bytes, " (--http-max-header-bytes)"));
    } else if (ec == http::error::body_limit) {
      server_->Reject("body_too_large");
      const std::string_view length = Sv(parser_->get()[http::field::content_length]);
      SendError(413, length.empty()
                         ? absl::StrCat("body: more than ", opts_.max_body_bytes, " bytes, at most ",
                                        opts_.max_body_bytes, " (--http-max-body-bytes)")
                         : absl::StrCat("body: ", Av(NoNewlines(length)), " bytes, at most ", opts_.max_body_bytes,
                                        " (--http-max-body-bytes)"));
    } else {
      server_->Reject("bad_request");
      SendError(400, absl::StrCat("malformed HTTP request: ", ec.message()));
    }
  }

  void Dispatch() {
    auto& m = parser_->get();
    phase_ = Phase::kResponding;
    DisarmRead();
    if (!m.keep_alive()) close_after_ = true;
    head_ = m.method() == http::verb::head;
    chunked_ = m.version() >= 11;
    version_ = m.version();
    HttpRequest request;
    request.method = std::string(Sv(m.method_string()));
    request.target = std::string(Sv(m.target()));
    request.path = request.target.substr(0, request.target.find('?'));
    request.headers.reserve(8);
    for (const auto& field : m) request.headers.emplace_back(Sv(field.name_string()), Sv(field.value()));
    request.body = std::move(m.body());
    request.remote = remote_;
    parser_.reset();

    auto exchange =
        std::make_shared<ExchangeImpl>(std::move(request), weak_from_this(), opts_.max_queued_response_bytes, chunked_);
    exchange_ = exchange;
    server_->active.fetch_add(1, std::memory_order_relaxed);
    StartRead();
    try {
      server_->handler(exchange);
    } catch (const std::exception& e) {
      HandlerFailed(e.what());
    } catch (...) {
      HandlerFailed("unknown exception");
    }
  }

  void HandlerFailed(std::string_view what) {
    PHI_LOG(ERROR, "http_handler_threw").Str("what", what).Str("remote", remote_);
    if (closed_ || exchange_ == nullptr) return;
    close_after_ = true;
    switch (exchange_->ClaimForError()) {
      case ExchangeImpl::Claim::kClaimed:
        SendError(500, "internal error: the request handler failed");
        break;
      case ExchangeImpl::Claim::kAnswered:  // its response is on its way; the connection closes after it
        break;
      case ExchangeImpl::Claim::kStreaming:  // nobody will end that stream
        Close();
        break;
    }
  }

  // ---- timers

  void ArmRead(double seconds) {
    ++read_gen_;
    if (seconds <= 0) {
      read_timer_.cancel();
      return;
    }
    read_timer_.expires_after(Seconds(seconds));
    read_timer_.async_wait([self = Self(), gen = read_gen_](const ErrorCode& ec) {
      if (ec || gen != self->read_gen_ || self->closed_) return;
      self->OnReadTimeout();
    });
  }

  void DisarmRead() {
    ++read_gen_;
    read_timer_.cancel();
  }

  void OnReadTimeout() {
    switch (phase_) {
      case Phase::kIdle:
      case Phase::kLinger:
        Close();
        break;
      case Phase::kHeader:
        if (handshaking_) {
          server_->Reject("tls_handshake");
          Close();
        } else if (buffer_.size() == 0) {  // not a byte of a request: nobody to answer
          server_->Reject("header_timeout");
          Close();
        } else {
          server_->Reject("header_timeout");
          SendError(408, absl::StrFormat("request headers not complete after %g s (--http-header-timeout-seconds)",
                                         opts_.header_timeout_seconds));
        }
        break;
      case Phase::kBody:
        server_->Reject("body_timeout");
        SendError(408, absl::StrFormat("request body not complete after %g s (--http-body-timeout-seconds)",
                                       opts_.body_timeout_seconds));
        break;
      case Phase::kResponding:
        break;
    }
  }

  void ArmWrite() {
    ++write_gen_;
    if (opts_.write_timeout_seconds <= 0) return;
    write_timer_.expires_after(Seconds(opts_.write_timeout_seconds));
    write_timer_.async_wait([self = Self(), gen = write_gen_](const ErrorCode& ec) {
      if (ec || gen != self->write_gen_ || self->closed_ || !self->writing_) return;
      self->server_->Reject("write_timeout");
      self->Close();
    });
  }

  // ---- writing

  std::string Head(int status, std::string_view content_type, const HttpHeaders& extra,
                   std::optional<size_t> content_length) {
    if (!server_->accepting.load(std::memory_order_relaxed)) close_after_ = true;
    std::string_view reason = Sv(http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status))));
    if (reason.empty() || reason.front() == '<') reason = "Status";
    std::string out = absl::StrCat("HTTP/1.1 ", status, " ", Av(reason), "\r\n");
    if (!content_type.empty()) absl::StrAppend(&out, "Content-Type: ", Av(NoNewlines(content_type)), "\r\n");
    if (content_length) {
      absl::StrAppend(&out, "Content-Length: ", *content_length, "\r\n");
    } else if (chunked_) {
      out += "Transfer-Encoding: chunked\r\n";
    }
    for (const auto& [name, value] : extra) {
      absl::StrAppend(&out, Av(NoNewlines(name)), ": ", Av(NoNewlines(value)), "\r\n");
    }
    if (close_after_) {
      out += "Connection: close\r\n";
    } else if (version_ < 11) {
      out += "Connection: keep-alive\r\n";
    }
    out += "\r\n";
    return out;
  }

  // The server's own error answer (OpenAI's JSON); the connection closes after it.
  void SendError(int status, std::string_view message) {
    phase_ = Phase::kResponding;
    DisarmRead();
    parser_.reset();
    close_after_ = true;
    std::string body = ErrorJson(status, message);
    Queue(Head(status, "application/json", {}, body.size()), false);
    Queue(std::move(body), false);
    end_queued_ = true;
    StartWrite();
    StartRead();
  }

  void Queue(std::string data, bool counted) {
    if (!data.empty()) out_.push_back({std::move(data), counted});
  }

  void StartWrite() {
    if (closed_ || writing_ || out_.empty()) return;
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(std::min(out_.size(), kMaxWriteBuffers));
    for (const Segment& segment : out_) {
      if (buffers.size() == kMaxWriteBuffers) break;
      const size_t skip = buffers.empty() ? out_offset_ : 0;
      buffers.emplace_back(segment.data.data() + skip, segment.data.size() - skip);
    }
    writing_ = true;
    ArmWrite();
    stream_.async_write_some(buffers, [self = Self()](const ErrorCode& ec, size_t n) { self->OnWrite(ec, n); });
  }

  void OnWrite(const ErrorCode& ec, size_t n) {
    writing_ = false;
    if (closed_) return;
    if (ec) {
      Close();
      return;
    }
    while (n > 0 && !out_.empty()) {
      Segment& front = out_.front();
      const size_t left = front.data.size() - out_offset_;
      if (n < left) {
        out_offset_ += n;
        break;
      }
      n -= left;
      if (front.counted && exchange_ != nullptr) exchange_->Written(front.data.size());
      out_.pop_front();
      out_offset_ = 0;
    }
    if (!out_.empty()) {
      StartWrite();  // progress: the write timeout starts again
      return;
    }
    ++write_gen_;
    write_timer_.cancel();
    MaybeFinishResponse();
  }

  void MaybeFinishResponse() {
    if (closed_ || !end_queued_ || writing_ || !out_.empty()) return;
    end_queued_ = false;
    if (exchange_ != nullptr) {
      std::shared_ptr<ExchangeImpl> exchange = std::move(exchange_);
      if (exchange->MarkFinished()) server_->active.fetch_sub(1, std::memory_order_relaxed);
    }
    if (close_after_ || !server_->accepting.load(std::memory_order_relaxed)) {
      CloseGracefully();
      return;
    }
    // The next request: pipelined bytes may be waiting.
    if (buffer_.size() > 0) {
      phase_ = Phase::kHeader;
      ArmRead(opts_.header_timeout_seconds);
      Parse();
    } else {
      phase_ = Phase::kIdle;
      ArmRead(opts_.idle_timeout_seconds);
      StartRead();
    }
  }

  // Our FIN goes out after the response; unread request bytes are drained for a while so that
  // the kernel does not answer them with a reset that could destroy the response in flight.
  void CloseGracefully() {
    phase_ = Phase::kLinger;
    ErrorCode ignored;
    stream_.lowest_layer().shutdown(tcp::socket::shutdown_send, ignored);
    buffer_.clear();
    const double linger = opts_.header_timeout_seconds > 0 ? std::min(kLingerSeconds, opts_.header_timeout_seconds)
                                                            : kLingerSeconds;
    ArmRead(linger);
    StartRead();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    ++read_gen_;
    ++write_gen_;
    read_timer_.cancel();
    write_timer_.cancel();
    ErrorCode ignored;
    stream_.lowest_layer().close(ignored);
    out_.clear();
    buffer_.clear();
    parser_.reset();
    // Callbacks first: once Stop() sees every session unregistered, every exchange was told.
    if (std::shared_ptr<ExchangeImpl> exchange = std::move(exchange_)) {
      if (exchange->MarkGone()) server_->active.fetch_sub(1, std::memory_order_relaxed);
    }
    server_->Unregister(this, !reject_);
  }

  struct Segment {
    std::string data;
    bool counted;  // handed to Write(): counts against max_queued_response_bytes
  };

  HttpServer::Impl* const server_;
  const HttpServerOptions& opts_;
  Stream stream_;
  asio::steady_timer read_timer_;
  asio::steady_timer write_timer_;
  const bool reject_;  // over max_connections: answer 503 and close
  const std::string remote_;
  const std::unique_ptr<char[]> rbuf_;

  Phase phase_ = Phase::kHeader;
  bool closed_ = false;
  bool handshaking_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool close_after_ = false;  // Connection: close on the current response, then close
  bool end_queued_ = false;   // the current response's last bytes are queued
  uint64_t read_gen_ = 0;
  uint64_t write_gen_ = 0;

  beast::flat_buffer buffer_;  // received, not parsed yet
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<ExchangeImpl> exchange_;  // the request being answered
  bool head_ = false;
  bool chunked_ = true;
  unsigned version_ = 11;
  std::deque<Segment> out_;
  size_t out_offset_ = 0;  // bytes of out_.front() already written
};

}  // namespace

std::shared_ptr<SessionBase> MakeSession(HttpServer::Impl* server, tcp::socket socket, bool reject,
                                         std::string remote) {
  if (server->ssl != nullptr) {
    return std::make_shared<Session<TlsStream>>(server, std::move(socket), reject, std::move(remote));
  }
  return std::make_shared<Session<tcp::socket>>(server, std::move(socket), reject, std::move(remote));
}

}  // namespace phi::gateway::http_internal
