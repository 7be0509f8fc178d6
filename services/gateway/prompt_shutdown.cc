#include "services/gateway/prompt_shutdown.h"

#include <arpa/inet.h>
#include <grpc/grpc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

namespace phi::gateway {
namespace {

// How often the helper looks at its conditions and pokes civetweb: short against the
// shutdown it shortens, long enough to cost nothing.
constexpr auto kTick = std::chrono::milliseconds(10);

}  // namespace

PromptShutdown::PromptShutdown(common::ServiceServer* server, std::function<bool()> quiet, std::string metrics_host)
    : server_(server), quiet_(std::move(quiet)), metrics_host_(std::move(metrics_host)) {}

PromptShutdown::~PromptShutdown() { Done(); }

void PromptShutdown::Begin() {
  // Read now: ServiceServer::Shutdown destroys the metrics server (and its port()) at its end.
  metrics_port_ = server_->metrics_port();
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
}

void PromptShutdown::Done() {
  {
    std::lock_guard<std::mutex> l(mu_);
    done_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool PromptShutdown::WaitFor(const std::function<bool()>& condition) {
  std::unique_lock<std::mutex> l(mu_);
  while (!done_ && !condition()) cv_.wait_for(l, kTick);
  return !done_;
}

void PromptShutdown::Run() {
  // 1. gRPC's Shutdown has begun: ServiceServer::Shutdown turns health NOT_SERVING right before
  //    it, and one more tick lets it stop taking calls.
  if (!WaitFor([this] { return !server_->serving(); })) return;
  {
    std::unique_lock<std::mutex> l(mu_);
    if (cv_.wait_for(l, kTick, [this] { return done_; })) return;
  }
  // 2. Drain: every admitted generation finishes and its reply leaves (the server's grace
  //    deadline bounds this).
  if (!WaitFor(quiet_)) return;
  // 3. Nothing is running: close the idle client connections gRPC's Shutdown would wait for.
  grpc_server_cancel_all_calls(server_->grpc_server()->c_server());
  // 4. Until Done(): keep waking civetweb's master thread so mg_stop returns without its 2 s poll.
  for (;;) {
    WakeMetricsServer();
    std::unique_lock<std::mutex> l(mu_);
    if (cv_.wait_for(l, kTick, [this] { return done_; })) return;
  }
}

void PromptShutdown::WakeMetricsServer() const {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(metrics_port_));
  const bool any = metrics_host_.empty() || metrics_host_ == "0.0.0.0";
  if (inet_pton(AF_INET, any ? "127.0.0.1" : metrics_host_.c_str(), &addr.sin_addr) == 1) {
    (void)connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  }
  close(fd);
}

}  // namespace phi::gateway
