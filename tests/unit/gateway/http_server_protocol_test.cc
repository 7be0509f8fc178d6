// The HTTP server over loopback: requests and responses, keep-alive, pipelining, Expect and
// HEAD, HTTP/1.0, answers from other threads, a handler that throws.
#include "services/gateway/http_server.h"

#include <gtest/gtest.h>

#include "tests/unit/gateway/http_server_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::http_test;  // NOLINT: the server tests' client and helpers

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

}  // namespace
}  // namespace phi::gateway
