#include "services/gateway/prompt_shutdown.h"

#include <grpc/grpc.h>

#include <chrono>

namespace phi::gateway {
namespace {

// How often the helper looks at its conditions: short against the shutdown it shortens,
// long enough to cost nothing.
constexpr auto kTick = std::chrono::milliseconds(10);

}  // namespace

PromptShutdown::PromptShutdown(common::ServiceServer* server, std::function<bool()> quiet)
    : server_(server), quiet_(std::move(quiet)) {}

PromptShutdown::~PromptShutdown() { Done(); }

void PromptShutdown::Begin() {
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
  // 4. ServiceServer::Shutdown now returns promptly (the metrics server wakes civetweb itself).
}

}  // namespace phi::gateway
