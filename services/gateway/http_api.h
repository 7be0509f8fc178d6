// The OpenAI-compatible HTTP API on the gateway (civetweb + nlohmann JSON):
//   POST /v1/chat/completions   (stream: Server-Sent Events)
//   POST /v1/completions        (echo + logprobs, prompts as text or token ids,
//                                for lm-evaluation-harness's local-completions)
//   GET  /v1/models, GET /health
// Errors use OpenAI's shape {"error": {"message", "type", "param", "code"}}.
// ref: https://platform.openai.com/docs/api-reference/chat
#ifndef PHI_SERVICES_GATEWAY_HTTP_API_H_
#define PHI_SERVICES_GATEWAY_HTTP_API_H_

#include <atomic>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "services/gateway/auth.h"
#include "services/gateway/chatml.h"
#include "services/gateway/generator.h"
#include "services/gateway/http_tls.h"

struct mg_context;
struct mg_connection;

namespace phi::gateway {

struct HttpApiOptions {
  std::string host = "0.0.0.0";
  int port = 8080;
  int threads = 128;
  // Both set: HTTPS only on `port` (see http_tls.h); both empty: plaintext.
  HttpTlsFiles tls;
};

// Request translation (exposed for unit tests): OpenAI JSON -> GenerateParams.
// Errors are INVALID_ARGUMENT naming the JSON field.
absl::StatusOr<GenerateParams> ParamsFromOpenAiChat(const nlohmann::json& body, const ChatmlOptions& chatml);
// One GenerateParams per prompt (a string, a list of strings, a list of token
// ids or a list of such lists).
absl::StatusOr<std::vector<GenerateParams>> ParamsFromOpenAiCompletion(const nlohmann::json& body);
// HTTP status and OpenAI error type for a status code.
int HttpStatusFor(absl::StatusCode code);
nlohmann::json OpenAiError(const absl::Status& status);
std::string OpenAiFinishReason(phi::v1::FinishReason r);

class HttpApi {
 public:
  static absl::StatusOr<std::unique_ptr<HttpApi>> Start(const HttpApiOptions& options, Generator* generator,
                                                        Auth* auth, GatewayMetrics* metrics, ChatmlOptions chatml);
  ~HttpApi();
  int port() const { return port_; }
  bool tls() const { return !tls_.cert_file.empty(); }
  // New requests get 503 (draining); running ones finish.
  void StopAccepting() { draining_.store(true); }
  // Waits until no request is being served, up to `seconds`; true if none is left.
  bool Drain(double seconds);

 private:
  HttpApi() = default;
  static int Handle(mg_connection* conn, void* self);
  int Dispatch(mg_connection* conn);
  int ChatCompletions(mg_connection* conn, const nlohmann::json& body, const std::string& auth);
  int Completions(mg_connection* conn, const nlohmann::json& body, const std::string& auth);
  int Models(mg_connection* conn, const std::string& auth);

  mg_context* ctx_ = nullptr;
  int port_ = 0;
  Generator* generator_ = nullptr;
  Auth* auth_ = nullptr;
  GatewayMetrics* metrics_ = nullptr;
  ChatmlOptions chatml_;
  HttpTlsFiles tls_;  // civetweb's init_ssl callback reads it (mg_start's user_data)
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_API_H_
