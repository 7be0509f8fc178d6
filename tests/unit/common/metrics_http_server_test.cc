// The metrics HTTP server over a real socket: it serves the registry and stops at once.
#include "services/common/metrics/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "services/common/metrics/registry.h"

namespace phi::metrics {
namespace {

std::string Get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
  (void)write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(MetricsHttpServerTest, ServesTheRegistryAndHealth) {
  Registry registry;
  registry.AddCounter("phi_test_requests_total", "Requests.").Get().Inc(3);
  auto server = MetricsHttpServer::Start("127.0.0.1", 0, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string metrics = Get((*server)->port(), "/metrics");
  EXPECT_NE(metrics.find("200 OK"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("phi_test_requests_total 3"), std::string::npos) << metrics;
  EXPECT_NE(Get((*server)->port(), "/healthz").find("200 OK"), std::string::npos);
  (*server)->SetHealthCallback([] { return false; });
  EXPECT_NE(Get((*server)->port(), "/healthz").find("503"), std::string::npos);
}

// civetweb's mg_stop alone waits for its 2 s poll of the listening socket to end; the server
// wakes it, so stopping takes milliseconds. After one request the master thread is inside a
// fresh poll, so without the wake each stop here takes ~2 s (checked by disabling it).
TEST(MetricsHttpServerTest, StopsWithoutWaitingForCivetwebsPoll) {
  Registry registry;
  double worst = 0;
  for (int i = 0; i < 3; ++i) {
    auto server = MetricsHttpServer::Start("", 0, &registry);
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_NE(Get((*server)->port(), "/healthz").find("200 OK"), std::string::npos);
    const auto t0 = std::chrono::steady_clock::now();
    server->reset();
    worst = std::max(worst, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  EXPECT_LT(worst, 1.0);
}

}  // namespace
}  // namespace phi::metrics
