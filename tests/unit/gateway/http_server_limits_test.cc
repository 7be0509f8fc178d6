// The HTTP server's bounds and timeouts: body and header sizes, malformed requests, slow
// headers and bodies, idle keep-alive connections, the connection limit.
#include "services/gateway/http_server.h"

#include <gtest/gtest.h>

#include "tests/unit/gateway/http_server_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::http_test;  // NOLINT: the server tests' client and helpers

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

}  // namespace
}  // namespace phi::gateway
