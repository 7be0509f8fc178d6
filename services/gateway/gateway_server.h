// Wiring of the gateway process: flags, tokenizer client, worker pool, gRPC
// ChatService, the OpenAI-compatible HTTP API, metrics, graceful drain.
#ifndef PHI_SERVICES_GATEWAY_GATEWAY_SERVER_H_
#define PHI_SERVICES_GATEWAY_GATEWAY_SERVER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "services/common/config.h"
#include "services/common/server.h"
#include "services/gateway/generation_service.h"
#include "services/gateway/http_api.h"
#include "services/gateway/worker_pool.h"

namespace phi::gateway {

// Everything the gateway's flags set (README.md lists them with their env names).
struct GatewayConfig {
  common::ServerOptions server;  // the gRPC port, metrics port, logs, shutdown grace
  std::string tokenizers = "127.0.0.1:50052";  // host:port[,host:port...], failover
  std::string local_decode;     // model folder or tokenizer.json: decode in-process
  std::string local_tokenizer;  // the same: encode and decode in-process
  WorkerPoolOptions pool;       // worker groups, health checks, keepalive pings
  GenerationServiceOptions generation;  // the first-token timeout
  int64_t default_max_new_tokens = 0;  // into generation.default_max_new_tokens
  std::string api_keys_file;    // none: no auth (PHI_API_KEYS adds keys)
  int64_t max_concurrent_per_key = 0;
  std::string default_system_prompt;
  std::string tls_cert, tls_key;  // PEM: TLS on the gRPC port and HTTPS
  // HTTP: the flags with integer types of their own; HttpOptions() copies them into `http`,
  // whose timeouts and web_ui the flags set directly.
  int64_t http_port = 8080;
  int64_t http_threads = HttpServerOptions{}.io_threads;
  int64_t http_max_connections = HttpServerOptions{}.max_connections;
  int64_t http_max_body_bytes = static_cast<int64_t>(HttpServerOptions{}.max_body_bytes);
  int64_t http_max_header_bytes = static_cast<int64_t>(HttpServerOptions{}.max_header_bytes);
  HttpApiOptions http;
};

void AddGatewayFlags(common::FlagSet& flags, GatewayConfig* config);

// Checks what the flag ranges cannot (TLS files readable and paired, one local tokenizer
// mode); errors name the flag. GatewayMain exits 2 on them.
absl::Status ValidateGatewayConfig(const GatewayConfig& config);

// Starts the gRPC and HTTP front ends and serves until SIGTERM/SIGINT, then drains both.
// Returns the process exit code: 2 for a bad setting found at start, 1 when the HTTP server
// cannot start or the drain had to cut requests, else 0.
int RunGateway(const GatewayConfig& config);

// Flags into a GatewayConfig, then RunGateway.
int GatewayMain(int argc, char** argv);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_GATEWAY_SERVER_H_
