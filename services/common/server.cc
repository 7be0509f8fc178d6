#include "services/common/server.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <grpc/grpc.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "services/common/grpc_metrics_interceptor.h"
#include "services/common/logging.h"
#include "services/common/metrics/process_metrics.h"

#ifndef PHI_VERSION
#define PHI_VERSION "dev"
#endif

namespace phi::common {

void AddServerFlags(FlagSet& flags, ServerOptions* o) {
  flags.AddString("host", "PHI_HOST", &o->host, "address to listen on (gRPC and /metrics)");
  flags.AddInt("port", "PHI_PORT", &o->port, 0, 65535, "gRPC port (0: pick a free one)");
  flags.AddInt("metrics-port", "PHI_METRICS_PORT", &o->metrics_port, 0, 65535,
               "HTTP port of /metrics and /healthz (0: pick a free one)");
  flags.AddDouble("shutdown-grace-seconds", "PHI_SHUTDOWN_GRACE_SECONDS", &o->shutdown_grace_seconds, 0, 3600,
                  "after SIGTERM, in-flight calls get this long to finish");
  flags.AddInt("max-message-bytes", "PHI_MAX_MESSAGE_BYTES", &o->max_message_bytes, 1024, int64_t{1} << 30,
               "largest gRPC message sent (and received, unless --max-receive-message-bytes)");
  flags.AddInt("max-receive-message-bytes", "PHI_MAX_RECEIVE_MESSAGE_BYTES", &o->max_receive_message_bytes, 0,
               int64_t{1} << 30,
               "largest gRPC request message; a larger one is refused (RESOURCE_EXHAUSTED) before it is parsed "
               "(0: the service's bound from its request limits)");
  flags.AddInt("grpc-memory-quota-bytes", "PHI_GRPC_MEMORY_QUOTA_BYTES", &o->grpc_memory_quota_bytes, 0,
               int64_t{1} << 40,
               "memory gRPC may hold for connections and calls; past it the newest streams are reset "
               "(0: 8 x the receive limit, at least 64 MiB)");
  flags.AddInt("keepalive-time-seconds", "PHI_KEEPALIVE_TIME_SECONDS", &o->keepalive_time_seconds, 1, 86400,
               "ping idle client connections this often");
  flags.AddInt("keepalive-timeout-seconds", "PHI_KEEPALIVE_TIMEOUT_SECONDS", &o->keepalive_timeout_seconds, 1,
               3600, "close a connection whose ping is not answered within this time");
  flags.AddChoice("log-level", "PHI_LOG_LEVEL", &o->log_level, {"debug", "info", "warning", "error"},
                  "least severe log level written");
}

int64_t ReceiveLimit(const ServerOptions& options) {
  return options.max_receive_message_bytes > 0 ? options.max_receive_message_bytes : options.max_message_bytes;
}

int64_t MemoryQuota(const ServerOptions& options) {
  constexpr int64_t kMinQuota = int64_t{64} << 20;
  return options.grpc_memory_quota_bytes > 0 ? options.grpc_memory_quota_bytes
                                             : std::max(kMinQuota, 8 * ReceiveLimit(options));
}

void InitLogging(const ServerOptions& options) {
  log::SetService(options.service_name);
  log::Level level = log::Level::kInfo;
  if (log::ParseLevel(options.log_level, &level)) log::SetMinLevel(level);
}

absl::StatusOr<std::unique_ptr<ServiceServer>> ServiceServer::Start(const ServerOptions& options,
                                                                    const std::vector<grpc::Service*>& services,
                                                                    metrics::Registry* registry) {
  std::unique_ptr<ServiceServer> self(new ServiceServer());
  self->options_ = options;

  static std::once_flag process_metrics_once;
  std::call_once(process_metrics_once, [registry] {
    metrics::RegisterProcessMetrics(*registry);
  });
  registry->AddGauge("phi_build_info", "Build information; always 1.", {"service", "version"})
      .WithLabels({options.service_name, PHI_VERSION})
      .Set(1);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(options.host, ":", options.port);
  builder.AddListeningPort(address, options.credentials ? options.credentials : grpc::InsecureServerCredentials(),
                           &self->port_);
  const int64_t receive_bytes = ReceiveLimit(options);
  builder.SetMaxReceiveMessageSize(static_cast<int>(receive_bytes));
  // gRPC refuses an oversized message only once it has it whole; the quota bounds what it may
  // buffer meanwhile, for all connections together.
  self->memory_quota_ = std::make_unique<grpc::ResourceQuota>(absl::StrCat("phi-", options.service_name));
  self->memory_quota_->Resize(static_cast<size_t>(MemoryQuota(options)));
  builder.SetResourceQuota(*self->memory_quota_);
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(options.keepalive_time_seconds * 1000));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(options.keepalive_timeout_seconds * 1000));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The gateway pings its workers every second (--worker-keepalive-seconds) to find a hung one
  // in seconds; a ping closer than 500 ms to the previous one is a strike, and the third strike
  // closes the connection (GOAWAY too_many_pings), so abusive clients are still cut off.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  // One server per address: without this a second process could bind the same port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (grpc::Service* s : services) builder.RegisterService(s);

  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(MakeActiveCallsInterceptorFactory(&self->active_calls_));
  interceptors.push_back(MakeMetricsInterceptorFactory(registry));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));

  self->server_ = builder.BuildAndStart();
  if (self->server_ == nullptr || self->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", address, " (port in use or not permitted)"));
  }

  auto http = metrics::MetricsHttpServer::Start(options.host, static_cast<int>(options.metrics_port), registry);
  if (!http.ok()) {
    self->server_->Shutdown(std::chrono::system_clock::now());
    return http.status();
  }
  self->http_ = std::move(*http);
  ServiceServer* raw = self.get();
  self->http_->SetHealthCallback([raw] { return raw->serving(); });

  self->SetServing(options.start_serving);
  return self;
}

ServiceServer::~ServiceServer() { Shutdown(); }

void ServiceServer::SetServing(bool serving) {
  serving_.store(serving);
  if (server_ != nullptr && server_->GetHealthCheckService() != nullptr) {
    // The empty name is the whole server's health, what Kubernetes' gRPC probes ask.
    server_->GetHealthCheckService()->SetServingStatus(serving);
  }
}

void ServiceServer::Shutdown() {
  if (shut_down_.exchange(true) || server_ == nullptr) return;
  SetServing(false);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(options_.shutdown_grace_seconds * 1000));
  PHI_LOG(INFO, "shutdown_started").Num("grace_seconds", options_.shutdown_grace_seconds);
  std::atomic<bool> shutdown_returned{false};
  std::thread closer([&] { CloseIdleConnectionsWhenQuiet(shutdown_returned); });
  server_->Shutdown(deadline);  // returns when every call has ended and every connection is closed
  shutdown_returned.store(true);
  closer.join();
  server_->Wait();
  http_.reset();
  PHI_LOG(INFO, "shutdown_done");
}

// grpc::Server::Shutdown completes only when every client *connection* is gone, not just every
// call, and a connected but idle client (a grpcio channel without an active call does not read
// its socket, so it never answers the server's GOAWAY ping) held it for seconds. Once gRPC has
// begun shutting down (new calls refused) and no call is left whose reply could still be on its
// way, this closes those connections (grpc_server_cancel_all_calls, which has no call left to
// cancel then): in-flight calls still finish first, up to the grace deadline.
void ServiceServer::CloseIdleConnectionsWhenQuiet(const std::atomic<bool>& shutdown_returned) {
  // How often to look: short against the shutdown it shortens, long enough to cost nothing.
  constexpr auto kTick = std::chrono::milliseconds(10);
  // grpc::Server::Shutdown is called right after this thread starts; the margin lets it reach
  // the core's shutdown (stop listening, refuse new calls) before anything is closed.
  constexpr auto kShutdownStartMargin = std::chrono::milliseconds(50);
  const auto look_from = std::chrono::steady_clock::now() + kShutdownStartMargin;
  while (!shutdown_returned.load()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= look_from && active_calls_.count() == 0 && now - active_calls_.last_ended() >= kReplyLinger) {
      PHI_LOG(INFO, "idle_connections_closed");
      grpc_server_cancel_all_calls(server_->c_server());
      return;
    }
    std::this_thread::sleep_for(kTick);
  }
}

void DisableMutexDeadlockDetection() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

int ServeUntilSignal(ServiceServer& server, const std::function<void()>& before_shutdown) {
  const int sig = WaitForTerminationSignal();
  PHI_LOG(INFO, "signal_received").Str("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  if (before_shutdown) before_shutdown();
  server.Shutdown();
  return 0;
}

std::unique_ptr<ServiceServer> StartOrExit(const ServerOptions& options,
                                           const std::vector<grpc::Service*>& services) {
  auto server = ServiceServer::Start(options, services);
  if (!server.ok()) {
    PHI_LOG(ERROR, "start_failed").Str("error", std::string(server.status().message()));
    std::fprintf(stderr, "phi-%s: %s\n", options.service_name.c_str(), std::string(server.status().message()).c_str());
    std::exit(1);
  }
  PHI_LOG(INFO, "serving")
      .Int("grpc_port", (*server)->port())
      .Int("metrics_port", (*server)->metrics_port())
      .Int("max_receive_message_bytes", ReceiveLimit(options))
      .Int("grpc_memory_quota_bytes", MemoryQuota(options))
      .Str("host", options.host);
  return std::move(*server);
}

}  // namespace phi::common
