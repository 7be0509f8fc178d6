// What the HTTP server's tests share (http_server_*_test.cc): a blocking loopback client (plain or
// TLS) that parses responses as sent, request texts, a rejection recorder, the server options
// with short timeouts, and waiting helpers.
#ifndef PHI_TESTS_UNIT_GATEWAY_HTTP_SERVER_TEST_UTIL_H_
#define PHI_TESTS_UNIT_GATEWAY_HTTP_SERVER_TEST_UTIL_H_

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
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "services/gateway/http_server.h"

namespace phi::gateway::http_test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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

inline std::string Get(std::string_view path, std::string_view extra = "") {
  return std::string("GET ") + std::string(path) + " HTTP/1.1\r\nHost: x\r\n" + std::string(extra) + "\r\n";
}

inline std::string Post(std::string_view path, std::string_view body) {
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

inline HttpServerOptions TestOptions() {
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
inline HttpHandler Echo() {
  return [](std::shared_ptr<HttpExchange> ex) {
    const HttpRequest& r = ex->request();
    ex->Respond(200, "text/plain", r.method + " " + r.path + " " + r.body, {{"X-Test", "1"}});
  };
}

inline std::unique_ptr<HttpServer> StartOrDie(const HttpServerOptions& o, HttpHandler h, HttpRejectCounter rejects = {}) {
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

}  // namespace phi::gateway::http_test

#endif  // PHI_TESTS_UNIT_GATEWAY_HTTP_SERVER_TEST_UTIL_H_
