// The HTTP server's shutdown (StopAccepting, Stop, the destructor with open streams) and TLS.
#include "services/gateway/http_server.h"

#include <gtest/gtest.h>

#include "tests/unit/gateway/http_server_test_util.h"

namespace phi::gateway {
namespace {

using namespace phi::gateway::http_test;  // NOLINT: the server tests' client and helpers

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
