#include "services/gateway/http_api.h"

#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/gateway/generation.h"
#include "services/gateway/http_responses.h"
#include "services/gateway/web_page.h"

namespace phi::gateway {

using nlohmann::json;

namespace {

constexpr char kModelsPrefix[] = "/v1/models/";

// The client's X-Request-Id when it is short printable ASCII; otherwise a new one.
std::string RequestIdFor(const HttpRequest& req) {
  std::string_view given = req.Header("X-Request-Id");
  bool ok = !given.empty() && given.size() <= 128;
  for (char c : given) ok = ok && c > 0x20 && c < 0x7f;
  return ok ? std::string(given) : absl::StrCat("req-", RandomHex());
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(const HttpApiOptions& options, GenerationService* generations,
                                                        Auth* auth, GatewayMetrics* metrics,
                                                        metrics::Registry* registry, ChatmlOptions chatml) {
  std::unique_ptr<HttpApi> api(new HttpApi());
  api->generations_ = generations;
  api->auth_ = auth;
  api->metrics_ = metrics;
  api->chatml_ = std::move(chatml);
  api->limits_ = options.limits;
  api->web_ui_ = options.web_ui;
  api->blocking_ = std::make_unique<BlockingExecutor>(options.tokenizer_call_threads);
  api->rejected_ = &registry->AddCounter("phi_gateway_http_rejected_total",
                                         "HTTP connections or requests the server refused or cut, by reason",
                                         {"reason"});
  HttpApi* self = api.get();
  auto server = HttpServer::Start(
      options.server, [self](std::shared_ptr<HttpExchange> ex) { self->Handle(std::move(ex)); },
      [self](std::string_view reason) { self->rejected_->WithLabels({std::string(reason)}).Inc(); });
  if (!server.ok()) return server.status();
  api->server_ = std::move(*server);
  auto* connections = &registry->AddGauge("phi_gateway_http_connections", "Open HTTP connections").Get();
  auto* exchanges =
      &registry->AddGauge("phi_gateway_http_requests_open", "HTTP requests whose response has not finished").Get();
  HttpServer* srv = api->server_.get();
  registry->AddCollector([connections, exchanges, srv] {
    connections->Set(srv->open_connections());
    exchanges->Set(srv->active_exchanges());
  });
  return api;
}

HttpApi::~HttpApi() {
  if (server_) server_->Stop();
}

void HttpApi::StopAccepting() {
  draining_.store(true);
  server_->StopAccepting();
}

int HttpApi::Drain(double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  auto open = [this] {
    std::lock_guard<std::mutex> l(calls_mu_);
    return calls_.size();
  };
  while (open() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<std::shared_ptr<LiveCall>> left;
  {
    std::lock_guard<std::mutex> l(calls_mu_);
    for (auto& [ptr, call] : calls_) left.push_back(call);
  }
  int cut = 0;
  const absl::Status shutdown = absl::UnavailableError("the gateway is shutting down: its drain grace ran out");
  for (auto& call : left) cut += call->Abort(shutdown) ? 1 : 0;
  // Let the I/O threads write the error events out before the sockets close.
  const auto flush_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (server_->active_exchanges() > 0 && std::chrono::steady_clock::now() < flush_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cut;
}

void HttpApi::Track(std::shared_ptr<LiveCall> call) {
  std::lock_guard<std::mutex> l(calls_mu_);
  LiveCall* key = call.get();
  calls_.emplace(key, std::move(call));
}

void HttpApi::Untrack(LiveCall* call) {
  std::shared_ptr<LiveCall> last;  // destroyed outside the lock
  std::lock_guard<std::mutex> l(calls_mu_);
  auto it = calls_.find(call);
  if (it == calls_.end()) return;
  last = std::move(it->second);
  calls_.erase(it);
}

void HttpApi::Refuse(const std::string& route, const std::shared_ptr<HttpExchange>& ex, const absl::Status& s,
                     const std::string& request_id) {
  CountRequest(route, s);
  RespondError(ex, s, request_id);
}

void HttpApi::CountRequest(const std::string& route, const absl::Status& s, const std::string& model) {
  // A label only for a name that is served now: a client's unknown name never becomes one.
  bool served = false;
  if (!model.empty()) {
    for (const ModelSummary& m : generations_->pool()->Models()) served = served || m.name == model;
  }
  metrics_->CountRequest(route, std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code())),
                         served ? model : "");
}

void HttpApi::Handle(std::shared_ptr<HttpExchange> ex) {
  const HttpRequest& req = ex->request();
  const std::string request_id = RequestIdFor(req);
  const std::string& path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD";
  auto method_not_allowed = [&](const char* allowed) {
    HttpHeaders h = BaseHeaders(request_id);
    h.emplace_back("Allow", allowed);
    ex->Respond(405, kJsonContentType,
                DumpJson(OpenAiError(absl::InvalidArgumentError(absl::StrCat(path, ": use ", allowed))) ),
                std::move(h));
  };
  if (path == "/health" || path == "/healthz") {
    const bool ok = !draining_.load() && !generations_->pool()->Models().empty();
    RespondJson(ex, ok ? 200 : 503, json{{"status", ok ? "ok" : "unavailable"}}, request_id);
    return;
  }
  if (path == "/v1/models" || absl::StartsWith(path, kModelsPrefix)) {
    if (!get) return method_not_allowed("GET");
    return Models(ex, request_id, path == "/v1/models" ? "" : path.substr(sizeof(kModelsPrefix) - 1));
  }
  if (web_ui_ && ServeWebPage(*ex)) return;
  using Route = void (HttpApi::*)(const std::shared_ptr<HttpExchange>&, const std::string&);
  Route route = nullptr;
  if (path == "/v1/chat/completions") route = &HttpApi::ChatCompletions;
  if (path == "/v1/completions") route = &HttpApi::Completions;
  if (path == "/tokenize") route = &HttpApi::Tokenize;
  if (path == "/detokenize") route = &HttpApi::Detokenize;
  if (path == "/v1/load_lora_adapter") route = &HttpApi::LoadLoraAdapter;
  if (path == "/v1/unload_lora_adapter") route = &HttpApi::UnloadLoraAdapter;
  if (!route) {
    RespondError(ex, absl::NotFoundError(absl::StrCat("no route ", req.method, " ", path)), request_id);
    return;
  }
  if (req.method != "POST") return method_not_allowed("POST");
  if (draining_.load()) {
    RespondError(ex, absl::UnavailableError("the gateway is shutting down"), request_id);
    return;
  }
  (this->*route)(ex, request_id);
}

void HttpApi::Models(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id, const std::string& one) {
  absl::Status s = auth_->Check(std::string(ex->request().Header("Authorization")));
  if (s.ok()) {
    json data = json::array();
    for (const auto& m : generations_->pool()->Models()) {
      // As vLLM lists them: a LoRA adapter's parent is its base model, its root the folder it
      // was read from; a base model is its own root.
      json model = {{"id", m.name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "phi-serve"},
                    {"root", m.parent.empty() ? m.name : m.root},
                    {"parent", m.parent.empty() ? json(nullptr) : json(m.parent)},
                    {"max_model_len", m.max_context_tokens},
                    {"max_context_tokens", m.max_context_tokens}};
      if (one.empty()) {
        data.push_back(std::move(model));
      } else if (m.name == one) {
        CountRequest("http_models", s);
        RespondJson(ex, 200, model, request_id);
        return;
      }
    }
    if (one.empty()) {
      CountRequest("http_models", s);
      RespondJson(ex, 200, json{{"object", "list"}, {"data", data}}, request_id);
      return;
    }
    s = absl::NotFoundError(absl::StrCat("model: '", one.substr(0, 256), "' is not served here (GET /v1/models)"));
  }
  CountRequest("http_models", s);
  RespondError(ex, s, request_id);
}

void HttpApi::Tokenize(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id) {
  absl::Status s = auth_->Check(std::string(ex->request().Header("Authorization")));
  if (!s.ok()) return Refuse("http_tokenize", ex, s, request_id);
  absl::StatusOr<TokenizeRequest> req = ParseTokenizeRequest(ex->request().body, chatml_, limits_);
  if (!req.ok()) return Refuse("http_tokenize", ex, req.status(), request_id);
  blocking_->Post([this, ex, request_id, req = std::move(*req)] {
    int32_t max_model_len = 0;
    for (const auto& m : generations_->pool()->Models()) {
      if (req.model.empty() || m.name == req.model) max_model_len = m.max_context_tokens;
    }
    absl::StatusOr<std::vector<int32_t>> ids = generations_->tokenizer()->Encode(req.prompt, req.parse_special,
                                                                               Deadline::max());
    absl::StatusOr<std::vector<std::string>> strs = std::vector<std::string>();
    if (ids.ok() && req.return_token_strs) strs = generations_->tokenizer()->DecodeEach(*ids, Deadline::max());
    absl::Status st = ids.ok() ? strs.status() : ids.status();
    CountRequest("http_tokenize", st);
    if (!st.ok()) return RespondError(ex, st, request_id);
    json body = {{"count", ids->size()}, {"max_model_len", max_model_len}, {"tokens", *ids},
                 {"token_strs", req.return_token_strs ? json(*strs) : json(nullptr)}};
    RespondJson(ex, 200, body, request_id);
  });
}

void HttpApi::Detokenize(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id) {
  absl::Status s = auth_->Check(std::string(ex->request().Header("Authorization")));
  if (!s.ok()) return Refuse("http_detokenize", ex, s, request_id);
  absl::StatusOr<DetokenizeRequest> req = ParseDetokenizeRequest(ex->request().body, limits_);
  if (!req.ok()) return Refuse("http_detokenize", ex, req.status(), request_id);
  blocking_->Post([this, ex, request_id, req = std::move(*req)] {
    absl::StatusOr<std::string> text = generations_->tokenizer()->Decode(req.tokens, false, Deadline::max());
    CountRequest("http_detokenize", text.status());
    if (!text.ok()) return RespondError(ex, text.status(), request_id);
    RespondJson(ex, 200, json{{"prompt", *text}}, request_id);
  });
}

}  // namespace phi::gateway
