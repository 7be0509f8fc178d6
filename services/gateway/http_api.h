// The OpenAI-compatible HTTP API on the gateway, served by HttpServer (http_server.h: event
// driven, no thread per connection or stream):
//   POST /v1/chat/completions   (stream: Server-Sent Events)
//   POST /v1/completions        (echo + logprobs, prompts as text or token ids,
//                                for lm-evaluation-harness's local-completions)
//   GET  /v1/models, GET /v1/models/{id} (LoRA adapters with their "parent", as vLLM)
//   POST /v1/load_lora_adapter, /v1/unload_lora_adapter (vLLM's; http_lora_adapters.cc)
//   POST /tokenize, POST /detokenize (vLLM's shapes)
//   GET  /health
//   GET  /, /static/...         the chat page (web_page.h), unless turned off
// Bodies are parsed and validated by openai_request.h. Every generation runs through
// GenerationService::Start with a sink that writes to the exchange from gRPC's threads; a client that
// goes away cancels its generation. Errors use OpenAI's shape {"error": {"message", "type",
// "param", "code"}}; every response carries X-Request-Id (the client's, or a new one).
// ref: https://platform.openai.com/docs/api-reference/chat
#ifndef PHI_SERVICES_GATEWAY_HTTP_API_H_
#define PHI_SERVICES_GATEWAY_HTTP_API_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "services/common/metrics/registry.h"
#include "services/gateway/auth.h"
#include "services/gateway/blocking_executor.h"
#include "services/gateway/chatml.h"
#include "services/gateway/generation_service.h"
#include "services/gateway/http_responses.h"
#include "services/gateway/http_server.h"
#include "services/gateway/openai_request.h"

namespace phi::gateway {

struct HttpApiOptions {
  HttpServerOptions server;
  OpenAiRequestLimits limits;
  // Threads for the tokenizer calls some responses need (echo of token-id prompts, /tokenize).
  int tokenizer_call_threads = 4;
  // The chat page at "/" (web_page.h); --no-web-ui turns it off.
  bool web_ui = true;
};


class HttpApi {
 public:
  static absl::StatusOr<std::unique_ptr<HttpApi>> Start(const HttpApiOptions& options, GenerationService* generations,
                                                        Auth* auth, GatewayMetrics* metrics,
                                                        metrics::Registry* registry, ChatmlOptions chatml);
  ~HttpApi();
  int port() const { return server_->port(); }
  bool tls() const { return server_->tls(); }

  // SIGTERM: the listener closes; requests on open connections get 503; running ones go on.
  void StopAccepting();
  // Waits up to `seconds` for the running requests to end, then ends the rest: a stream gets an
  // SSE error event, a request that has sent nothing a 503. Returns how many were cut.
  int Drain(double seconds);

  // A request whose response is still being produced; Drain() cuts those left at the grace's end.
  class LiveCall {
   public:
    virtual ~LiveCall() = default;
    // Ends the response now with `status` (an SSE error event when the stream has begun) and
    // cancels the generation(s). True when the response was still open.
    virtual bool Abort(const absl::Status& status) = 0;
  };

 private:
  class ChatCall;
  class CompletionCall;

  HttpApi() = default;
  void Handle(std::shared_ptr<HttpExchange> ex);
  void Track(std::shared_ptr<LiveCall> call);
  void Untrack(LiveCall* call);
  void ChatCompletions(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id);
  void Completions(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id);
  void Tokenize(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id);
  void Detokenize(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id);
  void Models(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id, const std::string& one);
  void LoadLoraAdapter(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id);
  void UnloadLoraAdapter(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id);
  // `model`: the model the request named; the metric's label only when it is served now.
  void CountRequest(const std::string& route, const absl::Status& s, const std::string& model = "");
  // A request refused before it started (auth, body): counted on `route` and answered.
  void Refuse(const std::string& route, const std::shared_ptr<HttpExchange>& ex, const absl::Status& s,
              const std::string& request_id);

  GenerationService* generations_ = nullptr;
  Auth* auth_ = nullptr;
  GatewayMetrics* metrics_ = nullptr;
  ChatmlOptions chatml_;
  OpenAiRequestLimits limits_;
  bool web_ui_ = true;
  std::atomic<bool> draining_{false};
  std::unique_ptr<BlockingExecutor> blocking_;
  std::mutex calls_mu_;
  std::unordered_map<LiveCall*, std::shared_ptr<LiveCall>> calls_;
  metrics::Family<metrics::Counter>* rejected_ = nullptr;
  std::unique_ptr<HttpServer> server_;  // last: stopped first, before what its handlers use
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_API_H_
