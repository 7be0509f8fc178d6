// The Beast HTTP server over real loopback sockets: raw POSIX (and OpenSSL) clients, no HTTP library.
#include "services/gateway/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace phi::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A response as the client read it.
struct Response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;
  std::string Header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (strcasecmp(k.c_str(), std::string(name).c_str()) == 0) return v;
    }
    return "";
  }
};

// A blocking client socket (optionally TLS) with a read buffer so that pipelined responses parse.
class Client {
 public:
  explicit Client(int port, int rcvbuf = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    timeval tv{5, 0};  // no test waits this long: a hang fails instead of blocking the suite
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~Client() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool StartTls() {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);  // self-signed test certificate
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    return SSL_connect(ssl_) == 1;
  }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ssl_ != nullptr ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
                                        : ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads more into the buffer; false on EOF, error or timeout.
  bool Fill() {
    char buf[16384];
    const ssize_t n =
        ssl_ != nullptr ? SSL_read(ssl_, buf, sizeof buf) : ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buf_.append(buf, static_cast<size_t>(n));
    return true;
  }

  // One response; status 0 when the connection ended first. `head`: the answer to HEAD (no body).
  Response Read(bool head_only = false) {
    Response r;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return r;
    }
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    r.status = std::atoi(status_line.substr(9, 3).c_str());
    while (line_end != std::string::npos) {
      const size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      std::string line = head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers.emplace_back(line.substr(0, colon), value);
    }
    if (r.status == 100) return Read(head_only);
    if (head_only) return r;
    if (!r.Header("Content-Length").empty()) {
      const size_t length = std::stoul(r.Header("Content-Length"));
      while (buf_.size() < length) {
        if (!Fill()) return Response{};
      }
      r.body = buf_.substr(0, length);
      buf_.erase(0, length);
    } else if (r.Header("Transfer-Encoding") == "chunked") {
      r.chunked = true;
      for (;;) {
        size_t eol;
        while ((eol = buf_.find("\r\n")) == std::string::npos) {
          if (!Fill()) return Response{};
        }
        const size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
        while (buf_.size() < eol + 2 + size + 2) {
          if (!Fill()) return Response{};
        }
        r.body += buf_.substr(eol + 2, size);
        buf_.erase(0, eol + 2 + size + 2);
        if (size == 0) break;
      }
    } else {
      while (Fill()) {
      }
      r.body = std::move(buf_);
      buf_.clear();
    }
    return r;
  }

  // True when the server closes the connection within `timeout` (EOF or reset).
  bool WaitClosed(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char c[4096];
      const ssize_t n = ssl_ != nullptr ? SSL_read(ssl_, c, sizeof c) : ::recv(fd_, c, sizeof c, 0);
      if (n <= 0) return true;
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

std::string Get(std::string_view path, std::string_view extra = "") {
  return std::string("GET ") + std::string(path) + " HTTP/1.1\r\nHost: x\r\n" + std::string(extra) + "\r\n";
}

std::string Post(std::string_view path, std::string_view body) {
  return std::string("POST ") + std::string(path) + " HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

// Rejection reasons the server reported.
struct Rejects {
  std::mutex mu;
  std::vector<std::string> reasons;
  HttpRejectCounter Counter() {
    return [this](std::string_view r) {
      std::lock_guard lock(mu);
      reasons.emplace_back(r);
    };
  }
  bool Has(std::string_view r) {
    std::lock_guard lock(mu);
    for (const auto& x : reasons) {
      if (x == r) return true;
    }
    return false;
  }
};

HttpServerOptions TestOptions() {
  HttpServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.io_threads = 2;
  o.header_timeout_seconds = 0.5;
  o.body_timeout_seconds = 0.5;
  o.idle_timeout_seconds = 0.5;
  o.write_timeout_seconds = 0.5;
  return o;
}

// Answers with "<method> <path> <body>".
HttpHandler Echo() {
  return [](std::shared_ptr<HttpExchange> ex) {
    const HttpRequest& r = ex->request();
    ex->Respond(200, "text/plain", r.method + " " + r.path + " " + r.body, {{"X-Test", "1"}});
  };
}

std::unique_ptr<HttpServer> StartOrDie(const HttpServerOptions& o, HttpHandler h, HttpRejectCounter rejects = {}) {
  auto s = HttpServer::Start(o, std::move(h), std::move(rejects));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Waits for `pred` up to `timeout`.
template <class Pred>
bool Eventually(Pred pred, std::chrono::milliseconds timeout = 2000ms) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// A one-shot flag to wait on.
struct Signal {
  std::mutex mu;
  std::condition_variable cv;
  bool set = false;
  void Notify() {
    std::lock_guard lock(mu);
    set = true;
    cv.notify_all();
  }
  bool Wait(std::chrono::milliseconds timeout = 2000ms) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [this] { return set; });
  }
};

TEST(HttpServer, GetAndPostRoundTrip) {
  std::string remote, header;
  std::mutex mu;
  auto server = StartOrDie(TestOptions(), [&](std::shared_ptr<HttpExchange> ex) {
    {
      std::lock_guard lock(mu);
      remote = ex->request().remote;
      header = std::string(ex->request().Header("x-custom"));
    }
    Echo()(ex);
  });
  ASSERT_NE(server, nullptr);
  EXPECT_GT(server->port(), 0);
  EXPECT_FALSE(server->tls());
  Client c(server->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(Get("/v1/models?x=1", "X-Custom: hello\r\n")));
  Response r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET /v1/models ");
  EXPECT_EQ(r.Header("X-Test"), "1");
  EXPECT_EQ(r.Header("Content-Type"), "text/plain");
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(header, "hello");
    EXPECT_EQ(remote.rfind("127.0.0.1:", 0), 0u) << remote;
  }
  ASSERT_TRUE(c.Send(Post("/v1/chat/completions", "{\"a\":1}")));
  r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /v1/chat/completions {\"a\":1}");
}

TEST(HttpServer, KeepAliveServesSequentialRequests) {
  auto server = StartOrDie(TestOptions(), Echo());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.Send(Post("/r", std::to_string(i))));
    Response r = c.Read();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "POST /r " + std::to_string(i));
    EXPECT_TRUE(r.Header("Connection").empty());
  }
  EXPECT_EQ(server->open_connections(), 1);
}

TEST(HttpServer, PipelinedRequestsAnsweredInOrder) {
  // The first answer comes late, from another thread: the others must wait for it.
  std::atomic<int> seen{0};
  std::vector<std::thread> threads;
  std::mutex mu;
  auto server = StartOrDie(TestOptions(), [&](std::shared_ptr<HttpExchange> ex) {
    const int n = seen.fetch_add(1);
    if (n == 0) {
      std::lock_guard lock(mu);
      threads.emplace_back([ex] {
        std::this_thread::sleep_for(100ms);
        Echo()(ex);
      });
    } else {
      Echo()(ex);
    }
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Post("/1", "a") + Get("/2") + Post("/3", "ccc")));
  EXPECT_EQ(c.Read().body, "POST /1 a");
  EXPECT_EQ(c.Read().body, "GET /2 ");
  EXPECT_EQ(c.Read().body, "POST /3 ccc");
  EXPECT_EQ(seen.load(), 3);
  std::lock_guard lock(mu);
  for (auto& t : threads) t.join();
}

TEST(HttpServer, BodyOverLimitRefusedAfterTheHeaders) {
  HttpServerOptions o = TestOptions();
  o.max_body_bytes = 1024;
  std::atomic<bool> called{false};
  Rejects rejects;
  auto server = StartOrDie(o, [&](std::shared_ptr<HttpExchange> ex) {
    called = true;
    Echo()(ex);
  }, rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  // Only the headers: the 413 must come without the body being sent.
  ASSERT_TRUE(c.Send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n"));
  Response r = c.Read();
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find("body: 9000000 bytes, at most 1024 (--http-max-body-bytes)"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"type\":\"invalid_request_error\""), std::string::npos);
  EXPECT_EQ(r.Header("Connection"), "close");
  EXPECT_EQ(r.Header("Content-Type"), "application/json");
  EXPECT_TRUE(c.WaitClosed(3000ms));
  EXPECT_FALSE(called.load());
  EXPECT_TRUE(rejects.Has("body_too_large"));

  // A body within the limit still works.
  Client ok(server->port());
  ASSERT_TRUE(ok.Send(Post("/p", std::string(1024, 'x'))));
  EXPECT_EQ(ok.Read().status, 200);
}

TEST(HttpServer, ChunkedBodyOverLimitRefused) {
  HttpServerOptions o = TestOptions();
  o.max_body_bytes = 1024;
  Rejects rejects;
  auto server = StartOrDie(o, Echo(), rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const std::string chunk = "258\r\n" + std::string(600, 'x') + "\r\n";  // 0x258 = 600
  ASSERT_TRUE(c.Send(chunk));
  c.Send(chunk);  // over 1024 with this one
  Response r = c.Read();
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find("at most 1024 (--http-max-body-bytes)"), std::string::npos) << r.body;
  EXPECT_TRUE(rejects.Has("body_too_large"));

  // Within the limit, chunked bodies are reassembled.
  Client ok(server->port());
  ASSERT_TRUE(ok.Send("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
  Response r2 = ok.Read();
  EXPECT_EQ(r2.status, 200);
  EXPECT_EQ(r2.body, "POST /p abcde");
}

TEST(HttpServer, HeadersOverLimitGet431) {
  HttpServerOptions o = TestOptions();
  o.max_header_bytes = 1024;
  Rejects rejects;
  auto server = StartOrDie(o, Echo(), rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Get("/", "X-Big: " + std::string(2000, 'a') + "\r\n")));
  Response r = c.Read();
  EXPECT_EQ(r.status, 431);
  EXPECT_NE(r.body.find("at most 1024 (--http-max-header-bytes)"), std::string::npos) << r.body;
  EXPECT_TRUE(rejects.Has("header_too_large"));
}

TEST(HttpServer, MalformedRequestGets400) {
  Rejects rejects;
  auto server = StartOrDie(TestOptions(), Echo(), rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send("GARBAGE\x01 / HTTP/9\r\n\r\n"));
  Response r = c.Read();
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("malformed HTTP request"), std::string::npos) << r.body;
  EXPECT_TRUE(c.WaitClosed(3000ms));
  EXPECT_TRUE(rejects.Has("bad_request"));
}

TEST(HttpServer, SlowLorisClosedAtTheHeaderTimeout) {
  Rejects rejects;
  auto server = StartOrDie(TestOptions(), Echo(), rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  const std::string request = Get("/", "X-Slow: " + std::string(200, 'a') + "\r\n");
  const auto start = Clock::now();
  // One byte every 50 ms: each byte is progress, but the deadline is for the whole header.
  size_t i = 0;
  bool answered = false;
  while (SecondsSince(start) < 3 && i < request.size()) {
    if (!c.Send(request.substr(i++, 1))) break;
    pollfd p{c.fd(), POLLIN, 0};
    if (poll(&p, 1, 50) > 0) {
      answered = true;
      break;
    }
  }
  ASSERT_TRUE(answered);
  const double elapsed = SecondsSince(start);
  EXPECT_GT(elapsed, 0.4);
  EXPECT_LT(elapsed, 2.0);
  Response r = c.Read();
  EXPECT_EQ(r.status, 408);
  EXPECT_NE(r.body.find("(--http-header-timeout-seconds)"), std::string::npos) << r.body;
  EXPECT_TRUE(rejects.Has("header_timeout"));
}

TEST(HttpServer, SlowBodyGets408) {
  Rejects rejects;
  auto server = StartOrDie(TestOptions(), Echo(), rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"));
  Response r = c.Read();
  EXPECT_EQ(r.status, 408);
  EXPECT_NE(r.body.find("(--http-body-timeout-seconds)"), std::string::npos) << r.body;
  EXPECT_TRUE(rejects.Has("body_timeout"));
}

TEST(HttpServer, IdleKeepAliveConnectionClosed) {
  auto server = StartOrDie(TestOptions(), Echo());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Get("/")));
  EXPECT_EQ(c.Read().status, 200);
  const auto start = Clock::now();
  EXPECT_TRUE(c.WaitClosed(3000ms));
  EXPECT_GT(SecondsSince(start), 0.3);
  EXPECT_TRUE(Eventually([&] { return server->open_connections() == 0; }));
}

TEST(HttpServer, ConnectionLimitGets503) {
  HttpServerOptions o = TestOptions();
  o.max_connections = 2;
  o.idle_timeout_seconds = 10;
  Rejects rejects;
  auto server = StartOrDie(o, Echo(), rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client a(server->port()), b(server->port());
  ASSERT_TRUE(a.Send(Get("/")));
  ASSERT_TRUE(b.Send(Get("/")));
  EXPECT_EQ(a.Read().status, 200);
  EXPECT_EQ(b.Read().status, 200);
  EXPECT_EQ(server->open_connections(), 2);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Get("/")));
  Response r = c.Read();
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("the gateway has 2 connections open, at most 2 (--http-max-connections)"), std::string::npos)
      << r.body;
  EXPECT_TRUE(rejects.Has("connection_limit"));
  EXPECT_EQ(server->open_connections(), 2);
}

TEST(HttpServer, StreamUsesChunkedFramingAndKeepsTheConnection) {
  std::vector<std::thread> threads;
  auto server = StartOrDie(TestOptions(), [&](std::shared_ptr<HttpExchange> ex) {
    if (ex->request().path == "/plain") return Echo()(ex);
    ex->StartStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
    threads.emplace_back([ex] {  // handler calls run on one connection's strand, one at a time
      EXPECT_TRUE(ex->Write("data: a\n\n"));
      EXPECT_TRUE(ex->Write(""));
      EXPECT_TRUE(ex->Write(std::string(5000, 'b')));
      ex->End();
      EXPECT_FALSE(ex->Write("late"));
    });
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Get("/stream")));
  Response r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.chunked);
  EXPECT_EQ(r.Header("Content-Type"), "text/event-stream");
  EXPECT_EQ(r.Header("Cache-Control"), "no-cache");
  EXPECT_EQ(r.body, "data: a\n\n" + std::string(5000, 'b'));
  ASSERT_TRUE(c.Send(Get("/plain")));
  EXPECT_EQ(c.Read().body, "GET /plain ");
  EXPECT_TRUE(Eventually([&] { return server->active_exchanges() == 0; }));
  for (auto& t : threads) t.join();
}

TEST(HttpServer, ClientClosingMidStreamIsNoticed) {
  Signal gone;
  std::shared_ptr<HttpExchange> held;
  std::mutex mu;
  auto server = StartOrDie(TestOptions(), [&](std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&] { gone.Notify(); });
    ex->StartStream(200, "text/event-stream");
    ex->Write("data: first\n\n");
    std::lock_guard lock(mu);
    held = ex;
  });
  ASSERT_NE(server, nullptr);
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send(Get("/stream")));
    ASSERT_TRUE(c.Fill());  // the headers and the first chunk
  }  // closes the socket
  EXPECT_TRUE(gone.Wait());
  std::lock_guard lock(mu);
  ASSERT_NE(held, nullptr);
  EXPECT_TRUE(held->client_gone());
  EXPECT_FALSE(held->Write("data: more\n\n"));
  // A callback set afterwards runs at once.
  bool ran = false;
  held->OnClientGone([&] { ran = true; });
  EXPECT_TRUE(ran);
  EXPECT_TRUE(Eventually([&] { return server->active_exchanges() == 0 && server->open_connections() == 0; }));
}

TEST(HttpServer, ClientThatNeverReadsOverflowsTheQueue) {
  HttpServerOptions o = TestOptions();
  o.max_queued_response_bytes = 64 << 10;
  o.write_timeout_seconds = 30;  // the queue bound must act first
  Rejects rejects;
  Signal gone;
  Signal streaming;
  std::shared_ptr<HttpExchange> held;
  auto server = StartOrDie(o, [&](std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&] { gone.Notify(); });
    ex->StartStream(200, "text/event-stream");
    held = ex;
    streaming.Notify();
  }, rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port(), /*rcvbuf=*/4096);
  ASSERT_TRUE(c.Send(Get("/stream")));
  ASSERT_TRUE(streaming.Wait());
  const std::string chunk(16 << 10, 'x');
  size_t written = 0;
  bool refused = false;
  const auto start = Clock::now();
  while (SecondsSince(start) < 5 && written < (256u << 20)) {
    if (!held->Write(chunk)) {
      refused = true;
      break;
    }
    written += chunk.size();
  }
  EXPECT_TRUE(refused) << written << " bytes accepted";
  EXPECT_TRUE(gone.Wait());
  EXPECT_TRUE(rejects.Has("queue_overflow"));
  EXPECT_FALSE(held->Write("more"));
}

TEST(HttpServer, WriteTimeoutWhenTheClientStopsReading) {
  HttpServerOptions o = TestOptions();
  o.max_queued_response_bytes = 256 << 20;  // the write timeout must act first
  Rejects rejects;
  Signal gone;
  Signal streaming;
  std::shared_ptr<HttpExchange> held;
  auto server = StartOrDie(o, [&](std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&] { gone.Notify(); });
    ex->StartStream(200, "text/event-stream");
    held = ex;
    streaming.Notify();
  }, rejects.Counter());
  ASSERT_NE(server, nullptr);
  Client c(server->port(), /*rcvbuf=*/4096);
  ASSERT_TRUE(c.Send(Get("/stream")));
  ASSERT_TRUE(streaming.Wait());
  const std::string chunk(64 << 10, 'x');
  for (int i = 0; i < 256 && held->Write(chunk); ++i) {  // 16 MiB: more than the socket buffers hold
  }
  EXPECT_TRUE(gone.Wait(3000ms));
  EXPECT_TRUE(rejects.Has("write_timeout"));
  EXPECT_FALSE(held->Write("more"));
}

TEST(HttpServer, ExpectContinueAndHead) {
  auto server = StartOrDie(TestOptions(), Echo());
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send("POST /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
  ASSERT_TRUE(c.Fill());  // the 100 Continue comes before the body is sent
  ASSERT_TRUE(c.Send("abc"));
  Response r = c.Read();  // skips the 100
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /p abc");
  // HEAD: the headers of the response, no body; the connection stays usable.
  ASSERT_TRUE(c.Send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + Get("/g")));
  Response h = c.Read(/*head=*/true);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.Header("Content-Length"), "8");  // "HEAD /h "
  EXPECT_EQ(c.Read().body, "GET /g ");
}

TEST(HttpServer, RespondFromAnotherThreadLater) {
  std::vector<std::thread> threads;
  auto server = StartOrDie(TestOptions(), [&](std::shared_ptr<HttpExchange> ex) {
    threads.emplace_back([ex] {
      std::this_thread::sleep_for(150ms);
      ex->Respond(201, "application/json", "{}");
      ex->Respond(500, "text/plain", "ignored");  // one answer per exchange
    });
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Get("/")));
  EXPECT_TRUE(Eventually([&] { return server->active_exchanges() == 1; }));
  Response r = c.Read();
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.body, "{}");
  EXPECT_TRUE(Eventually([&] { return server->active_exchanges() == 0; }));
  for (auto& t : threads) t.join();
}

TEST(HttpServer, Http10AndConnectionCloseHonoured) {
  auto server = StartOrDie(TestOptions(), Echo());
  ASSERT_NE(server, nullptr);
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send("GET /old HTTP/1.0\r\n\r\n"));
    Response r = c.Read();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.Header("Connection"), "close");
    EXPECT_TRUE(c.WaitClosed(3000ms));
  }
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send(Get("/", "Connection: close\r\n")));
    Response r = c.Read();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.Header("Connection"), "close");
    EXPECT_TRUE(c.WaitClosed(3000ms));
  }
}

TEST(HttpServer, HandlerThatThrowsGets500) {
  auto server = StartOrDie(TestOptions(), [](std::shared_ptr<HttpExchange>) { throw std::runtime_error("boom"); });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Get("/")));
  Response r = c.Read();
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("\"error\""), std::string::npos);
  EXPECT_EQ(r.Header("Connection"), "close");
  EXPECT_TRUE(c.WaitClosed(3000ms));
  // The server still serves.
  Client d(server->port());
  ASSERT_TRUE(d.Send(Get("/")));
  EXPECT_EQ(d.Read().status, 500);
}

TEST(HttpServer, StopAcceptingClosesIdleAndFinishesBusy) {
  HttpServerOptions o = TestOptions();
  o.idle_timeout_seconds = 10;
  std::shared_ptr<HttpExchange> busy;
  std::mutex mu;
  auto server = StartOrDie(o, [&](std::shared_ptr<HttpExchange> ex) {
    if (ex->request().path == "/busy") {
      std::lock_guard lock(mu);
      busy = ex;
    } else {
      Echo()(ex);
    }
  });
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  Client idle(port), working(port);
  ASSERT_TRUE(idle.Send(Get("/")));
  EXPECT_EQ(idle.Read().status, 200);
  ASSERT_TRUE(working.Send(Get("/busy")));
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard lock(mu);
    return busy != nullptr;
  }));
  server->StopAccepting();
  EXPECT_TRUE(idle.WaitClosed(2000ms));
  EXPECT_TRUE(Eventually([&] { return !Client(port).connected(); }));
  {
    std::lock_guard lock(mu);
    busy->Respond(200, "text/plain", "done");
  }
  Response r = working.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "done");
  EXPECT_EQ(r.Header("Connection"), "close");
  EXPECT_TRUE(working.WaitClosed(3000ms));
  EXPECT_TRUE(Eventually([&] { return server->open_connections() == 0; }));
}

TEST(HttpServer, StopClosesEverythingAndTellsExchanges) {
  std::atomic<int> gone{0};
  std::vector<std::shared_ptr<HttpExchange>> held;
  std::mutex mu;
  auto server = StartOrDie(TestOptions(), [&](std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&] { gone.fetch_add(1); });
    ex->StartStream(200, "text/event-stream");
    std::lock_guard lock(mu);
    held.push_back(ex);
  });
  ASSERT_NE(server, nullptr);
  Client a(server->port()), b(server->port());
  ASSERT_TRUE(a.Send(Get("/s")));
  ASSERT_TRUE(b.Send(Get("/s")));
  ASSERT_TRUE(Eventually([&] { return server->active_exchanges() == 2; }));
  server->Stop();
  EXPECT_EQ(gone.load(), 2);  // told before Stop returns
  EXPECT_EQ(server->open_connections(), 0);
  EXPECT_EQ(server->active_exchanges(), 0);
  EXPECT_TRUE(a.WaitClosed(2000ms));
  EXPECT_TRUE(b.WaitClosed(2000ms));
  std::lock_guard lock(mu);
  for (auto& ex : held) EXPECT_FALSE(ex->Write("x"));
  server.reset();  // the exchanges outlive the server harmlessly
  for (auto& ex : held) {
    EXPECT_FALSE(ex->Write("x"));
    ex->End();
  }
}

TEST(HttpServer, DestructorWithOpenStreamsDoesNotHang) {
  std::shared_ptr<HttpExchange> held;
  auto server = StartOrDie(TestOptions(), [&](std::shared_ptr<HttpExchange> ex) {
    ex->StartStream(200, "text/event-stream");
    held = ex;
  });
  ASSERT_NE(server, nullptr);
  Client a(server->port());
  ASSERT_TRUE(a.Send(Get("/s")));
  ASSERT_TRUE(Eventually([&] { return server->active_exchanges() == 1; }));
  const auto start = Clock::now();
  server.reset();
  EXPECT_LT(SecondsSince(start), 2.0);
  EXPECT_TRUE(held->client_gone());
}

TEST(HttpServer, BadTlsFilesRefused) {
  HttpServerOptions o = TestOptions();
  o.tls.cert_file = "/nonexistent/cert.pem";
  auto s = HttpServer::Start(o, Echo());
  EXPECT_FALSE(s.ok());
  o.tls.key_file = "/nonexistent/key.pem";
  s = HttpServer::Start(o, Echo());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("--tls-cert"), std::string::npos) << s.status();
}

TEST(HttpServer, TlsRoundTrip) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("phi_http_server_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  const std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost "
                          "-days 1 -keyout " + key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  HttpServerOptions o = TestOptions();
  o.tls = {cert, key};
  Rejects rejects;
  std::vector<std::thread> threads;
  auto server = StartOrDie(o, [&](std::shared_ptr<HttpExchange> ex) {
    if (ex->request().path != "/stream") return Echo()(ex);
    ex->StartStream(200, "text/event-stream");
    threads.emplace_back([ex] {
      for (int i = 0; i < 3; ++i) ex->Write("data: " + std::to_string(i) + "\n\n");
      ex->End();
    });
  }, rejects.Counter());
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->tls());
  {
    Client c(server->port());
    ASSERT_TRUE(c.StartTls());
    ASSERT_TRUE(c.Send(Post("/secure", "hi")));
    Response r = c.Read();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "POST /secure hi");
    ASSERT_TRUE(c.Send(Get("/stream")));
    r = c.Read();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
  }
  {
    Client plain(server->port());  // plain HTTP to the HTTPS port: a failed handshake
    ASSERT_TRUE(plain.Send(Get("/")));
    EXPECT_TRUE(plain.WaitClosed(2000ms));
    EXPECT_TRUE(Eventually([&] { return rejects.Has("tls_handshake"); }));
  }
  server.reset();
  for (auto& t : threads) t.join();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace phi::gateway
