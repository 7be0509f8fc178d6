#include "services/gateway/gateway_server.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_split.h"
#include "services/common/config.h"
#include "services/common/logging.h"
#include "services/common/server.h"
#include "services/gateway/auth.h"
#include "services/gateway/chat_service.h"
#include "services/gateway/http_api.h"
#include "services/gateway/http_tls.h"
#include "services/gateway/prompt_shutdown.h"

namespace phi::gateway {

int GatewayMain(int argc, char** argv) {
  common::DisableMutexDeadlockDetection();
  common::BlockTerminationSignals();
  common::ServerOptions server;
  server.service_name = "gateway";
  server.port = 50051;
  server.metrics_port = 9090;
  std::string tokenizers = "127.0.0.1:50052", workers = "127.0.0.1:50053", api_keys_file, system_prompt;
  std::string http_host = "0.0.0.0", tls_cert, tls_key, local_decode, local_tokenizer;
  int64_t http_port = 8080, max_concurrent = 0, default_max_new_tokens = 0;
  HttpApiOptions http_options;
  int64_t http_threads = http_options.server.io_threads, http_max_connections = http_options.server.max_connections;
  int64_t http_max_body = static_cast<int64_t>(http_options.server.max_body_bytes);
  int64_t http_max_header = static_cast<int64_t>(http_options.server.max_header_bytes);
  double health_interval = 1.0;
  double health_timeout = 2.0, worker_keepalive = 1.0, first_token_timeout = 600;

  common::FlagSet flags("phi-gateway", "Serves phi.v1.ChatService (gRPC) and an OpenAI-compatible HTTP API.");
  common::AddServerFlags(flags, &server);
  flags.AddString("tokenizer", "PHI_TOKENIZER", &tokenizers, "tokenizer service host:port[,host:port...] (failover)");
  flags.AddString("workers", "PHI_WORKERS", &workers,
                  "worker groups (rank 0): host:port[,host:port...] or dns:///name:port (all resolved addresses)");
  flags.AddInt("http-port", "PHI_HTTP_PORT", &http_port, 0, 65535, "OpenAI-compatible HTTP port (0 picks one)");
  flags.AddString("http-host", "PHI_HTTP_HOST", &http_host, "HTTP listen address");
  flags.AddInt("http-threads", "PHI_HTTP_THREADS", &http_threads, 1, 256,
               "HTTP I/O threads (event loops; each serves many connections and streams)");
  flags.AddInt("http-max-connections", "PHI_HTTP_MAX_CONNECTIONS", &http_max_connections, 1, 1 << 20,
               "open HTTP connections, idle ones included (over it: 503)");
  flags.AddInt("http-max-body-bytes", "PHI_HTTP_MAX_BODY_BYTES", &http_max_body, 1024, int64_t{1} << 30,
               "HTTP request body size (over it: 413, refused before it is read)");
  flags.AddInt("http-max-header-bytes", "PHI_HTTP_MAX_HEADER_BYTES", &http_max_header, 1024, 1 << 20,
               "HTTP request line + headers (over it: 431)");
  flags.AddDouble("http-header-timeout-seconds", "PHI_HTTP_HEADER_TIMEOUT_SECONDS",
                  &http_options.server.header_timeout_seconds, 0.05, 3600,
                  "time for a request's headers to arrive, in total (a slow client is closed: 408)");
  flags.AddDouble("http-body-timeout-seconds", "PHI_HTTP_BODY_TIMEOUT_SECONDS",
                  &http_options.server.body_timeout_seconds, 0.05, 3600, "time for a request's body to arrive (408)");
  flags.AddDouble("http-idle-timeout-seconds", "PHI_HTTP_IDLE_TIMEOUT_SECONDS",
                  &http_options.server.idle_timeout_seconds, 0.05, 86400,
                  "a keep-alive connection with no request is closed after this");
  flags.AddDouble("http-write-timeout-seconds", "PHI_HTTP_WRITE_TIMEOUT_SECONDS",
                  &http_options.server.write_timeout_seconds, 0.05, 3600,
                  "a response write that makes no progress this long: the client is gone (its request is cancelled)");
  flags.AddBool("web-ui", "PHI_WEB_UI", &http_options.web_ui,
                "serve the chat page at / on the HTTP port (--no-web-ui: off; the API is unchanged)");
  flags.AddString("api-keys-file", "PHI_API_KEYS_FILE", &api_keys_file,
                  "file of API keys, one per line (PHI_API_KEYS adds comma-separated keys); none: no auth");
  flags.AddInt("max-concurrent-per-key", "PHI_MAX_CONCURRENT_PER_KEY", &max_concurrent, 0, 1 << 20,
               "concurrent generation requests per API key (0: no limit)");
  flags.AddString("default-system-prompt", "PHI_DEFAULT_SYSTEM_PROMPT", &system_prompt,
                  "system message added to chats that have none (empty: none)");
  flags.AddInt("default-max-new-tokens", "PHI_DEFAULT_MAX_NEW_TOKENS", &default_max_new_tokens, 0, 1 << 20,
               "max_new_tokens when a request leaves it 0, over the model's own default (0: the "
               "model's: its generation_config.json's max_new_tokens, else 256)");
  flags.AddDouble("health-interval-seconds", "PHI_HEALTH_INTERVAL_SECONDS", &health_interval, 0.05, 3600,
                  "how often worker groups are checked with GetStatus");
  flags.AddDouble("health-timeout-seconds", "PHI_HEALTH_TIMEOUT_SECONDS", &health_timeout, 0.05, 3600,
                  "a worker group whose GetStatus takes longer is out of rotation until it answers again");
  flags.AddDouble("worker-keepalive-seconds", "PHI_WORKER_KEEPALIVE_SECONDS", &worker_keepalive, 0, 3600,
                  "HTTP/2 ping interval and timeout on worker connections: an unanswered ping drops the "
                  "connection and fails its streams (retried when no token went out); 0: no pings; "
                  "workers refuse pings closer than 0.5 s");
  flags.AddDouble("first-token-timeout-seconds", "PHI_FIRST_TOKEN_TIMEOUT_SECONDS", &first_token_timeout, 0,
                  86400,
                  "a worker attempt with no token by then is cancelled as hung, its group taken out of "
                  "rotation, and the request retried once on another group (0: no limit; it includes "
                  "queueing and prefill on the worker)");
  flags.AddString("local-decode", "PHI_LOCAL_DECODE", &local_decode,
                  "model folder or tokenizer.json of the served model: decode in-process (streams and logprob "
                  "texts) instead of one DecodeStream round trip per token (encoding stays with --tokenizer)");
  flags.AddString("local-tokenizer", "PHI_LOCAL_TOKENIZER", &local_tokenizer,
                  "model folder or tokenizer.json of the served model: encode AND decode in-process (no "
                  "tokenizer RPC per request: the --tokenizer service is then not called)");
  flags.AddString("tls-cert", "PHI_TLS_CERT", &tls_cert,
                  "PEM certificate chain (with --tls-key): TLS on the gRPC port and HTTPS on --http-port");
  flags.AddString("tls-key", "PHI_TLS_KEY", &tls_key, "PEM private key for --tls-cert");
  common::ParseFlagsOrExit(flags, argc, argv);
  common::InitLogging(server);
  if (tls_cert.empty() != tls_key.empty()) {
    std::fprintf(stderr, "phi-gateway: --tls-cert and --tls-key go together\n");
    return 2;
  }

  if (!tls_cert.empty()) {
    // Checked here, before anything listens: gRPC would only say that the server failed to start.
    if (absl::Status s = CheckTlsFiles({tls_cert, tls_key}); !s.ok()) {
      std::fprintf(stderr, "phi-gateway: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    auto read = [](const std::string& path, std::string* out) {
      std::ifstream in(path);
      std::stringstream ss;
      ss << in.rdbuf();
      *out = ss.str();
      return static_cast<bool>(in) && !out->empty();
    };
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!read(tls_cert, &pair.cert_chain) || !read(tls_key, &pair.private_key)) {
      std::fprintf(stderr, "phi-gateway: --tls-cert/--tls-key: cannot read '%s' or '%s'\n", tls_cert.c_str(),
                   tls_key.c_str());
      return 2;
    }
    ssl.pem_key_cert_pairs.push_back(pair);
    server.credentials = grpc::SslServerCredentials(ssl);
  }
  const char* env_keys = std::getenv("PHI_API_KEYS");
  auto auth = Auth::Create(api_keys_file, env_keys ? env_keys : "", static_cast<int>(max_concurrent));
  if (!auth.ok()) {
    std::fprintf(stderr, "phi-gateway: %s\n", auth.status().ToString().c_str());
    return 2;
  }
  std::vector<std::string> tok_addresses = absl::StrSplit(tokenizers, ',', absl::SkipWhitespace());
  auto tokenizer = TokenizerClient::Create(tok_addresses);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "phi-gateway: %s\n", tokenizer.status().ToString().c_str());
    return 2;
  }
  if (!local_decode.empty() && !local_tokenizer.empty()) {
    std::fprintf(stderr, "phi-gateway: --local-tokenizer already decodes in-process; drop --local-decode\n");
    return 2;
  }
  if (!local_decode.empty() || !local_tokenizer.empty()) {
    const bool encode = !local_tokenizer.empty();
    if (absl::Status s = (*tokenizer)->LoadLocal(encode ? local_tokenizer : local_decode, encode,
                                                 encode ? "--local-tokenizer" : "--local-decode");
        !s.ok()) {
      std::fprintf(stderr, "phi-gateway: %s\n", s.ToString().c_str());
      return 2;
    }
  }
  GatewayMetrics metrics(&metrics::DefaultRegistry());
  WorkerPoolOptions pool_options;
  pool_options.workers = workers;
  pool_options.health_interval_seconds = health_interval;
  pool_options.status_timeout_seconds = health_timeout;
  pool_options.keepalive_seconds = worker_keepalive;
  auto pool = WorkerPool::Create(pool_options, &metrics::DefaultRegistry());
  if (!pool.ok()) {
    std::fprintf(stderr, "phi-gateway: %s\n", pool.status().ToString().c_str());
    return 2;
  }
  GeneratorOptions gen_options;
  gen_options.default_max_new_tokens = static_cast<int32_t>(default_max_new_tokens);
  gen_options.first_token_timeout_seconds = first_token_timeout;
  Generator generator(tokenizer->get(), pool->get(), &metrics, gen_options);
  ChatmlOptions chatml;
  chatml.default_system_prompt = system_prompt;
  ChatServiceImpl service(&generator, auth->get(), &metrics, chatml);

  auto grpc_server = common::StartOrExit(server, {&service});
  http_options.server.host = http_host;
  http_options.server.port = static_cast<int>(http_port);
  http_options.server.io_threads = static_cast<int>(http_threads);
  http_options.server.max_connections = static_cast<int>(http_max_connections);
  http_options.server.max_body_bytes = static_cast<size_t>(http_max_body);
  http_options.server.max_header_bytes = static_cast<size_t>(http_max_header);
  http_options.server.tls = {tls_cert, tls_key};
  auto http = HttpApi::Start(http_options, &generator, auth->get(), &metrics, &metrics::DefaultRegistry(), chatml);
  if (!http.ok()) {
    std::fprintf(stderr, "phi-gateway: %s\n", http.status().ToString().c_str());
    return 1;
  }
  PHI_LOG(INFO, "http_listening").Int("port", (*http)->port()).Bool("tls", (*http)->tls());
  // Quiet: nothing generating, and the last reply had 1 s to be read off the socket (the handler
  // returns while the end of a stream may still sit in gRPC's buffers; cutting the connection
  // then would lose it).
  PromptShutdown prompt_shutdown(
      grpc_server.get(),
      [&generator] {
        return generator.active() == 0 &&
               std::chrono::steady_clock::now() - generator.last_finished() >= std::chrono::seconds(1);
      });
  // One grace for both front ends, counted from the signal.
  std::chrono::steady_clock::time_point drain_deadline;
  int rc = common::ServeUntilSignal(*grpc_server, [&] {
    drain_deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                            std::chrono::duration<double>(server.shutdown_grace_seconds));
    (*http)->StopAccepting();
    prompt_shutdown.Begin();
  });
  prompt_shutdown.Done();
  const double left = std::chrono::duration<double>(drain_deadline - std::chrono::steady_clock::now()).count();
  if (const int cut = (*http)->Drain(std::max(0.0, left)); cut > 0) {
    // Each was ended with an SSE error event (or a 503 when nothing had been sent).
    PHI_LOG(WARNING, "http_drain_cut").Int("requests", cut);
    rc = 1;
  }
  // A generation ends a moment after its call: the last worker-stream callback releases it after
  // the client's call has finished. The Generator must outlive them all.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (generator.active() > 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (generator.active() > 0) {
    PHI_LOG(WARNING, "generations_outlive_shutdown").Int("active", generator.active());
    // Their sinks still point into the HTTP API: the process is exiting, leave it alive.
    (void)http->release();
  }
  return rc;
}

}  // namespace phi::gateway
