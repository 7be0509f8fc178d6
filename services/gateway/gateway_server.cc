#include "services/gateway/gateway_server.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/common/logging.h"
#include "services/gateway/auth.h"
#include "services/gateway/chat_service.h"
#include "services/gateway/http_tls.h"
#include "services/gateway/prompt_shutdown.h"

namespace phi::gateway {
namespace {

void AddHttpFlags(common::FlagSet& flags, GatewayConfig* c) {
  HttpServerOptions& s = c->http.server;
  flags.AddInt("http-port", "PHI_HTTP_PORT", &c->http_port, 0, 65535, "OpenAI-compatible HTTP port (0 picks one)");
  flags.AddString("http-host", "PHI_HTTP_HOST", &s.host, "HTTP listen address");
  flags.AddInt("http-threads", "PHI_HTTP_THREADS", &c->http_threads, 1, 256,
               "HTTP I/O threads (event loops; each serves many connections and streams)");
  flags.AddInt("http-max-connections", "PHI_HTTP_MAX_CONNECTIONS", &c->http_max_connections, 1, 1 << 20,
               "open HTTP connections, idle ones included (over it: 503)");
  flags.AddInt("http-max-body-bytes", "PHI_HTTP_MAX_BODY_BYTES", &c->http_max_body_bytes, 1024, int64_t{1} << 30,
               "HTTP request body size (over it: 413, refused before it is read)");
  flags.AddInt("http-max-header-bytes", "PHI_HTTP_MAX_HEADER_BYTES", &c->http_max_header_bytes, 1024, 1 << 20,
               "HTTP request line + headers (over it: 431)");
  flags.AddDouble("http-header-timeout-seconds", "PHI_HTTP_HEADER_TIMEOUT_SECONDS", &s.header_timeout_seconds, 0.05,
                  3600, "time for a request's headers to arrive, in total (a slow client is closed: 408)");
  flags.AddDouble("http-body-timeout-seconds", "PHI_HTTP_BODY_TIMEOUT_SECONDS", &s.body_timeout_seconds, 0.05, 3600,
                  "time for a request's body to arrive (408)");
  flags.AddDouble("http-idle-timeout-seconds", "PHI_HTTP_IDLE_TIMEOUT_SECONDS", &s.idle_timeout_seconds, 0.05, 86400,
                  "a keep-alive connection with no request is closed after this");
  flags.AddDouble("http-write-timeout-seconds", "PHI_HTTP_WRITE_TIMEOUT_SECONDS", &s.write_timeout_seconds, 0.05,
                  3600,
                  "a response write that makes no progress this long: the client is gone (its request is cancelled)");
  flags.AddBool("web-ui", "PHI_WEB_UI", &c->http.web_ui,
                "serve the chat page at / on the HTTP port (--no-web-ui: off; the API is unchanged)");
}

void AddWorkerFlags(common::FlagSet& flags, GatewayConfig* c) {
  flags.AddString("workers", "PHI_WORKERS", &c->pool.workers,
                  "worker groups (rank 0): host:port[,host:port...] or dns:///name:port (all resolved addresses)");
  flags.AddDouble("health-interval-seconds", "PHI_HEALTH_INTERVAL_SECONDS", &c->pool.health_interval_seconds, 0.05,
                  3600, "how often worker groups are checked with GetStatus");
  flags.AddDouble("health-timeout-seconds", "PHI_HEALTH_TIMEOUT_SECONDS", &c->pool.status_timeout_seconds, 0.05,
                  3600, "a worker group whose GetStatus takes longer is out of rotation until it answers again");
  flags.AddDouble("worker-keepalive-seconds", "PHI_WORKER_KEEPALIVE_SECONDS", &c->pool.keepalive_seconds, 0, 3600,
                  "HTTP/2 ping interval and timeout on worker connections: an unanswered ping drops the "
                  "connection and fails its streams (retried when no token went out); 0: no pings; "
                  "workers refuse pings closer than 0.5 s");
  flags.AddDouble("first-token-timeout-seconds", "PHI_FIRST_TOKEN_TIMEOUT_SECONDS",
                  &c->generation.first_token_timeout_seconds, 0, 86400,
                  "a worker attempt with no token by then is cancelled as hung, its group taken out of "
                  "rotation, and the request retried once on another group (0: no limit; it includes "
                  "queueing and prefill on the worker)");
}

void AddTokenizerFlags(common::FlagSet& flags, GatewayConfig* c) {
  flags.AddString("tokenizer", "PHI_TOKENIZER", &c->tokenizers,
                  "tokenizer service host:port[,host:port...] (failover)");
  flags.AddString("local-decode", "PHI_LOCAL_DECODE", &c->local_decode,
                  "model folder or tokenizer.json of the served model: decode in-process (streams and logprob "
                  "texts) instead of one DecodeStream round trip per token (encoding stays with --tokenizer)");
  flags.AddString("local-tokenizer", "PHI_LOCAL_TOKENIZER", &c->local_tokenizer,
                  "model folder or tokenizer.json of the served model: encode AND decode in-process (no "
                  "tokenizer RPC per request: the --tokenizer service is then not called)");
}

// The whole file, or false when it cannot be read or is empty.
bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return static_cast<bool>(in) && !out->empty();
}

// --tls-cert/--tls-key as the gRPC server's credentials.
absl::Status SetGrpcTls(const GatewayConfig& c, common::ServerOptions* server) {
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  if (!ReadFile(c.tls_cert, &pair.cert_chain) || !ReadFile(c.tls_key, &pair.private_key)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert/--tls-key: cannot read '", c.tls_cert, "' or '", c.tls_key, "'"));
  }
  ssl.pem_key_cert_pairs.push_back(pair);
  server->credentials = grpc::SslServerCredentials(ssl);
  return absl::OkStatus();
}

// The tokenizer service's client, with --local-decode or --local-tokenizer loaded.
absl::StatusOr<std::unique_ptr<TokenizerClient>> MakeTokenizer(const GatewayConfig& c) {
  std::vector<std::string> addresses = absl::StrSplit(c.tokenizers, ',', absl::SkipWhitespace());
  absl::StatusOr<std::unique_ptr<TokenizerClient>> tokenizer = TokenizerClient::Create(addresses);
  if (!tokenizer.ok() || (c.local_decode.empty() && c.local_tokenizer.empty())) return tokenizer;
  const bool encode = !c.local_tokenizer.empty();
  absl::Status s = (*tokenizer)->LoadLocal(encode ? c.local_tokenizer : c.local_decode, encode,
                                           encode ? "--local-tokenizer" : "--local-decode");
  if (!s.ok()) return s;
  return tokenizer;
}

HttpApiOptions HttpOptions(const GatewayConfig& c) {
  HttpApiOptions http = c.http;
  http.server.port = static_cast<int>(c.http_port);
  http.server.io_threads = static_cast<int>(c.http_threads);
  http.server.max_connections = static_cast<int>(c.http_max_connections);
  http.server.max_body_bytes = static_cast<size_t>(c.http_max_body_bytes);
  http.server.max_header_bytes = static_cast<size_t>(c.http_max_header_bytes);
  http.server.tls = {c.tls_cert, c.tls_key};
  return http;
}

// SIGTERM: both front ends stop taking requests, then drain within one grace counted from the
// signal. Returns the exit code: 1 when the HTTP drain had to cut requests.
int ServeAndDrain(common::ServiceServer& grpc_server, HttpApi& http, const GenerationService& generations,
                  double grace_seconds) {
  // Quiet: nothing generating, and the last reply had 1 s to be read off the socket (the handler
  // returns while the end of a stream may still sit in gRPC's buffers; cutting the connection
  // then would lose it).
  PromptShutdown prompt_shutdown(&grpc_server, [&generations] {
    return generations.active() == 0 &&
           std::chrono::steady_clock::now() - generations.last_finished() >= std::chrono::seconds(1);
  });
  std::chrono::steady_clock::time_point drain_deadline;
  int rc = common::ServeUntilSignal(grpc_server, [&] {
    drain_deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                            std::chrono::duration<double>(grace_seconds));
    http.StopAccepting();
    prompt_shutdown.Begin();
  });
  prompt_shutdown.Done();
  const double left = std::chrono::duration<double>(drain_deadline - std::chrono::steady_clock::now()).count();
  if (const int cut = http.Drain(std::max(0.0, left)); cut > 0) {
    // Each was ended with an SSE error event (or a 503 when nothing had been sent).
    PHI_LOG(WARNING, "http_drain_cut").Int("requests", cut);
    rc = 1;
  }
  return rc;
}

// A generation ends a moment after its call: the last worker-stream callback releases it after
// the client's call has finished. Waits up to 5 s for them; false when some are still running.
bool AwaitGenerations(const GenerationService& generations) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (generations.active() > 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (generations.active() == 0) return true;
  PHI_LOG(WARNING, "generations_outlive_shutdown").Int("active", generations.active());
  return false;
}

int Fail(int code, const absl::Status& s) {
  std::fprintf(stderr, "phi-gateway: %s\n", s.ToString().c_str());
  return code;
}

}  // namespace

void AddGatewayFlags(common::FlagSet& flags, GatewayConfig* c) {
  c->server.service_name = "gateway";
  c->server.port = 50051;
  c->server.metrics_port = 9090;
  c->pool.workers = "127.0.0.1:50053";
  common::AddServerFlags(flags, &c->server);
  AddTokenizerFlags(flags, c);
  AddWorkerFlags(flags, c);
  AddHttpFlags(flags, c);
  flags.AddString("api-keys-file", "PHI_API_KEYS_FILE", &c->api_keys_file,
                  "file of API keys, one per line (PHI_API_KEYS adds comma-separated keys); none: no auth");
  flags.AddInt("max-concurrent-per-key", "PHI_MAX_CONCURRENT_PER_KEY", &c->max_concurrent_per_key, 0, 1 << 20,
               "concurrent generation requests per API key (0: no limit)");
  flags.AddString("default-system-prompt", "PHI_DEFAULT_SYSTEM_PROMPT", &c->default_system_prompt,
                  "system message added to chats that have none (empty: none)");
  flags.AddInt("default-max-new-tokens", "PHI_DEFAULT_MAX_NEW_TOKENS", &c->default_max_new_tokens, 0, 1 << 20,
               "max_new_tokens when a request leaves it 0, over the model's own default (0: the "
               "model's: its generation_config.json's max_new_tokens, else 256)");
  flags.AddString("tls-cert", "PHI_TLS_CERT", &c->tls_cert,
                  "PEM certificate chain (with --tls-key): TLS on the gRPC port and HTTPS on --http-port");
  flags.AddString("tls-key", "PHI_TLS_KEY", &c->tls_key, "PEM private key for --tls-cert");
}

absl::Status ValidateGatewayConfig(const GatewayConfig& c) {
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  // Checked here, before anything listens: gRPC would only say that the server failed to start.
  if (!c.tls_cert.empty()) {
    if (absl::Status s = CheckTlsFiles({c.tls_cert, c.tls_key}); !s.ok()) return s;
  }
  if (!c.local_decode.empty() && !c.local_tokenizer.empty()) {
    return absl::InvalidArgumentError("--local-tokenizer already decodes in-process; drop --local-decode");
  }
  return absl::OkStatus();
}

int RunGateway(const GatewayConfig& config) {
  common::ServerOptions server = config.server;
  // A gRPC request gets the bound of an HTTP body (JSON, the larger encoding of the same request).
  if (server.max_receive_message_bytes == 0) server.max_receive_message_bytes = config.http_max_body_bytes;
  if (!config.tls_cert.empty()) {
    if (absl::Status s = SetGrpcTls(config, &server); !s.ok()) {
      std::fprintf(stderr, "phi-gateway: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  const char* env_keys = std::getenv("PHI_API_KEYS");
  auto auth = Auth::Create(config.api_keys_file, env_keys ? env_keys : "",
                           static_cast<int>(config.max_concurrent_per_key));
  if (!auth.ok()) return Fail(2, auth.status());
  auto tokenizer = MakeTokenizer(config);
  if (!tokenizer.ok()) return Fail(2, tokenizer.status());
  GatewayMetrics metrics(&metrics::DefaultRegistry());
  auto pool = WorkerPool::Create(config.pool, &metrics::DefaultRegistry());
  if (!pool.ok()) return Fail(2, pool.status());
  GenerationServiceOptions generation = config.generation;
  generation.default_max_new_tokens = static_cast<int32_t>(config.default_max_new_tokens);
  GenerationService generations(tokenizer->get(), pool->get(), &metrics, generation);
  ChatmlOptions chatml;
  chatml.default_system_prompt = config.default_system_prompt;
  ChatServiceImpl service(&generations, auth->get(), &metrics, chatml);

  auto grpc_server = common::StartOrExit(server, {&service});
  auto http = HttpApi::Start(HttpOptions(config), &generations, auth->get(), &metrics, &metrics::DefaultRegistry(),
                             chatml);
  if (!http.ok()) return Fail(1, http.status());
  PHI_LOG(INFO, "http_listening").Int("port", (*http)->port()).Bool("tls", (*http)->tls());
  const int rc = ServeAndDrain(*grpc_server, **http, generations, server.shutdown_grace_seconds);
  // The GenerationService must outlive the generations; those still running have sinks that point into
  // the HTTP API: the process is exiting, leave it alive.
  if (!AwaitGenerations(generations)) (void)http->release();
  return rc;
}

int GatewayMain(int argc, char** argv) {
  common::DisableMutexDeadlockDetection();
  common::BlockTerminationSignals();
  GatewayConfig config;
  common::FlagSet flags("phi-gateway", "Serves phi.v1.ChatService (gRPC) and an OpenAI-compatible HTTP API.");
  AddGatewayFlags(flags, &config);
  common::ParseFlagsOrExit(flags, argc, argv);
  common::InitLogging(config.server);
  if (absl::Status s = ValidateGatewayConfig(config); !s.ok()) {
    std::fprintf(stderr, "phi-gateway: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return RunGateway(config);
}

}  // namespace phi::gateway
