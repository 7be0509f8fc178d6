// Streamed responses from the HTTP server: chunked framing, a client that goes away, one that
// never reads (queue overflow) or stops reading (write timeout).
#include "services/gateway/http_server.h"

#include <gtest/gtest.h>

#include <memory>

#include "tests/unit/gateway/http_server_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::http_test;  // NOLINT: the server tests' client and helpers

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

// A stream the handler starts and hands to the test, to a client with a small receive buffer
// that asked for it and then reads nothing. Members end in reverse order: client, server, stream.
struct UnreadStream {
  Rejects rejects;
  Signal gone;
  Signal streaming;
  std::shared_ptr<HttpExchange> held;
  std::unique_ptr<HttpServer> server;
  std::unique_ptr<Client> client;

  // True once the stream has started.
  bool Open(const HttpServerOptions& o) {
    server = StartOrDie(o, [this](std::shared_ptr<HttpExchange> ex) {
      ex->OnClientGone([this] { gone.Notify(); });
      ex->StartStream(200, "text/event-stream");
      held = ex;
      streaming.Notify();
    }, rejects.Counter());
    if (server == nullptr) return false;
    client = std::make_unique<Client>(server->port(), /*rcvbuf=*/4096);
    return client->Send(Get("/stream")) && streaming.Wait();
  }
};

TEST(HttpServer, ClientThatNeverReadsOverflowsTheQueue) {
  HttpServerOptions o = TestOptions();
  o.max_queued_response_bytes = 64 << 10;
  o.write_timeout_seconds = 30;  // the queue bound must act first
  UnreadStream s;
  ASSERT_TRUE(s.Open(o));
  const std::string chunk(16 << 10, 'x');
  size_t written = 0;
  bool refused = false;
  const auto start = Clock::now();
  while (SecondsSince(start) < 5 && written < (256u << 20)) {
    if (!s.held->Write(chunk)) {
      refused = true;
      break;
    }
    written += chunk.size();
  }
  EXPECT_TRUE(refused) << written << " bytes accepted";
  EXPECT_TRUE(s.gone.Wait());
  EXPECT_TRUE(s.rejects.Has("queue_overflow"));
  EXPECT_FALSE(s.held->Write("more"));
}

TEST(HttpServer, WriteTimeoutWhenTheClientStopsReading) {
  HttpServerOptions o = TestOptions();
  o.max_queued_response_bytes = 256 << 20;  // the write timeout must act first
  UnreadStream s;
  ASSERT_TRUE(s.Open(o));
  const std::string chunk(64 << 10, 'x');
  for (int i = 0; i < 256 && s.held->Write(chunk); ++i) {  // 16 MiB: more than the socket buffers hold
  }
  EXPECT_TRUE(s.gone.Wait(3000ms));
  EXPECT_TRUE(s.rejects.Has("write_timeout"));
  EXPECT_FALSE(s.held->Write("more"));
}

}  // namespace
}  // namespace phi::gateway
