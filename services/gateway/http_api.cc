#include "services/gateway/http_api.h"

#include <civetweb.h>

#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"

namespace phi::gateway {

using nlohmann::json;

namespace {

std::once_flag g_civetweb_init;

absl::Status Invalid(const std::string& m) { return absl::InvalidArgumentError(m); }

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const char* Reason(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 429: return "Too Many Requests";
    case 499: return "Client Closed Request";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Internal Server Error";
  }
}

void Reply(mg_connection* conn, int code, const std::string& body, const char* type = "application/json") {
  mg_printf(conn, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", code,
            Reason(code), type, body.size());
  mg_write(conn, body.data(), body.size());
}

int ReplyError(mg_connection* conn, const absl::Status& s) {
  int code = HttpStatusFor(s.code());
  Reply(conn, code, OpenAiError(s).dump());
  return code;
}

// Reads a number field with a range; absent or null: keeps *out.
template <typename T>
absl::Status GetNumber(const json& body, const char* name, double lo, double hi, T* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Invalid(absl::StrCat(name, ": must be a number"));
  double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) return Invalid(absl::StrCat(name, ": ", v, " is outside [", lo, ", ", hi, "]"));
  *out = static_cast<T>(v);
  return absl::OkStatus();
}

absl::Status GetStops(const json& body, phi::v1::StoppingCriteria* st) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    st->add_stop(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return Invalid("stop: must be a string or an array of strings");
  for (const auto& s : *it) {
    if (!s.is_string()) return Invalid("stop: must be a string or an array of strings");
    st->add_stop(s.get<std::string>());
  }
  return absl::OkStatus();
}

// Fields shared by both endpoints: sampling, max tokens, stop, seed, n.
absl::Status CommonFields(const json& body, GenerateParams* p, int default_max_tokens) {
  auto& s = p->sampling;
  float f = 0;
  if (auto st = GetNumber(body, "temperature", 0, 100, &f); !st.ok()) return st;
  // OpenAI's default temperature is 1; ours (unset) is greedy. Follow the API.
  s.set_temperature(body.contains("temperature") && !body["temperature"].is_null() ? f : 1.0f);
  f = 0;
  if (auto st = GetNumber(body, "top_p", 0, 1, &f); !st.ok()) return st;
  s.set_top_p(f);
  int32_t k = 0;
  if (auto st = GetNumber(body, "top_k", 0, 1 << 20, &k); !st.ok()) return st;
  s.set_top_k(k);
  f = 0;
  if (auto st = GetNumber(body, "min_p", 0, 1, &f); !st.ok()) return st;
  s.set_min_p(f);
  f = 0;
  if (auto st = GetNumber(body, "repetition_penalty", 0, 10, &f); !st.ok()) return st;
  s.set_repetition_penalty(f);
  f = 0;
  if (auto st = GetNumber(body, "presence_penalty", -2, 2, &f); !st.ok()) return st;
  s.set_presence_penalty(f);
  f = 0;
  if (auto st = GetNumber(body, "frequency_penalty", -2, 2, &f); !st.ok()) return st;
  s.set_frequency_penalty(f);
  if (body.contains("seed") && !body["seed"].is_null()) {
    if (!body["seed"].is_number_integer()) return Invalid("seed: must be an integer");
    s.set_seed(static_cast<uint64_t>(body["seed"].get<int64_t>()));
  }
  int32_t n = 1;
  if (auto st = GetNumber(body, "n", 1, 1, &n); !st.ok()) return Invalid("n: only 1 is supported");
  int32_t max_tokens = default_max_tokens;
  if (auto st = GetNumber(body, "max_tokens", 0, 1 << 24, &max_tokens); !st.ok()) return st;
  if (auto st = GetNumber(body, "max_completion_tokens", 1, 1 << 24, &max_tokens); !st.ok()) return st;
  p->stopping.set_max_new_tokens(max_tokens);
  if (auto st = GetStops(body, &p->stopping); !st.ok()) return st;
  if (body.contains("ignore_eos") && body["ignore_eos"].is_boolean()) p->stopping.set_ignore_eos(body["ignore_eos"]);
  if (body.contains("model") && body["model"].is_string()) p->model = body["model"];
  if (body.contains("user") && body["user"].is_string()) {
    // OpenAI's end-user id; not used for routing.
  }
  return absl::OkStatus();
}

json ChatLogprobs(const std::vector<phi::v1::PositionLogprobs>& lps) {
  json content = json::array();
  for (const auto& p : lps) {
    json top = json::array();
    for (const auto& t : p.top()) {
      top.push_back({{"token", t.text()}, {"logprob", t.logprob()},
                     {"bytes", std::vector<uint8_t>(t.text().begin(), t.text().end())}});
    }
    content.push_back({{"token", p.token().text()}, {"logprob", p.token().logprob()},
                       {"bytes", std::vector<uint8_t>(p.token().text().begin(), p.token().text().end())},
                       {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

// SSE writer: false once the client is gone.
bool SendEvent(mg_connection* conn, const std::string& data) {
  std::string ev = absl::StrCat("data: ", data, "\n\n");
  return mg_write(conn, ev.data(), ev.size()) == static_cast<int>(ev.size());
}

void StartSse(mg_connection* conn) {
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Connection: close\r\nX-Accel-Buffering: no\r\n\r\n");
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

json OpenAiError(const absl::Status& s) {
  std::string type = "server_error";
  json code = nullptr;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: type = "invalid_request_error"; break;
    case absl::StatusCode::kUnauthenticated: type = "authentication_error"; code = "invalid_api_key"; break;
    case absl::StatusCode::kNotFound: type = "invalid_request_error"; code = "model_not_found"; break;
    case absl::StatusCode::kResourceExhausted: type = "rate_limit_error"; break;
    default: break;
  }
  // The field named before ':' in our messages is OpenAI's "param".
  json param = nullptr;
  std::string msg(s.message());
  size_t colon = msg.find(':');
  if (type == "invalid_request_error" && colon != std::string::npos && colon < 48 &&
      msg.find(' ') > colon) {
    param = msg.substr(0, colon);
  }
  return json{{"error", {{"message", msg}, {"type", type}, {"param", param}, {"code", code}}}};
}

std::string OpenAiFinishReason(phi::v1::FinishReason r) {
  switch (r) {
    case phi::v1::FINISH_REASON_LENGTH:
    case phi::v1::FINISH_REASON_CONTEXT_LENGTH: return "length";
    default: return "stop";
  }
}

absl::StatusOr<GenerateParams> ParamsFromOpenAiChat(const json& body, const ChatmlOptions& chatml) {
  GenerateParams p;
  if (!body.is_object()) return Invalid("body: must be a JSON object");
  if (auto st = CommonFields(body, &p, 0); !st.ok()) return st;
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array()) return Invalid("messages: required, an array of {role, content}");
  google::protobuf::RepeatedPtrField<phi::v1::ChatMessage> msgs;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Invalid(absl::StrCat("messages[", i, "].role: required string"));
    }
    auto* msg = msgs.Add();
    std::string role = m["role"];
    if (role == "developer") role = "system";  // OpenAI's newer name for system
    msg->set_role(RoleFromName(role));
    if (msg->role() == phi::v1::ROLE_UNSPECIFIED) {
      return Invalid(absl::StrCat("messages[", i, "].role: '", role, "' is not system, user or assistant"));
    }
    const json& c = m.contains("content") ? m["content"] : json(nullptr);
    if (c.is_string()) {
      msg->set_content(c.get<std::string>());
    } else if (c.is_array()) {  // [{type: text, text: ...}]
      std::string text;
      for (const auto& part : c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Invalid(absl::StrCat("messages[", i, "].content: only text parts are supported"));
        }
        text += part["text"].get<std::string>();
      }
      msg->set_content(text);
    } else if (!c.is_null()) {
      return Invalid(absl::StrCat("messages[", i, "].content: must be a string or an array of text parts"));
    }
  }
  absl::StatusOr<phi::v1::SegmentList> segs = RenderChatml(msgs, chatml);
  if (!segs.ok()) return segs.status();
  *p.prompt.mutable_segments() = std::move(*segs);
  if (body.value("logprobs", false)) p.logprobs = true;
  if (auto st = GetNumber(body, "top_logprobs", 0, 20, &p.top_logprobs); !st.ok()) return st;
  if (p.top_logprobs > 0) p.logprobs = true;
  return p;
}

absl::StatusOr<std::vector<GenerateParams>> ParamsFromOpenAiCompletion(const json& body) {
  GenerateParams base;
  if (!body.is_object()) return Invalid("body: must be a JSON object");
  // OpenAI's default max_tokens for completions is 16.
  if (auto st = CommonFields(body, &base, 16); !st.ok()) return st;
  int32_t lp = -1;
  if (body.contains("logprobs") && !body["logprobs"].is_null()) {
    if (auto st = GetNumber(body, "logprobs", 0, 20, &lp); !st.ok()) return st;
    base.logprobs = true;
    base.top_logprobs = lp;
  }
  const bool echo = body.value("echo", false);
  auto it = body.find("prompt");
  if (it == body.end()) return Invalid("prompt: required");
  std::vector<json> prompts;
  if (it->is_string()) {
    prompts.push_back(*it);
  } else if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
    prompts.push_back(*it);  // one prompt as token ids
  } else if (it->is_array() && !it->empty()) {
    for (const auto& e : *it) prompts.push_back(e);
  } else {
    return Invalid("prompt: must be a string, an array of strings, or token ids");
  }
  std::vector<GenerateParams> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateParams p = base;
    const json& pr = prompts[i];
    if (pr.is_string()) {
      if (pr.get_ref<const std::string&>().empty()) return Invalid(absl::StrCat("prompt[", i, "]: empty"));
      p.prompt.set_text(pr.get<std::string>());
      p.parse_special = true;
      if (echo) p.echo_text = pr.get<std::string>();
    } else if (pr.is_array() && !pr.empty()) {
      for (const auto& id : pr) {
        if (!id.is_number_integer()) return Invalid(absl::StrCat("prompt[", i, "]: token ids must be integers"));
        p.prompt_ids.push_back(id.get<int32_t>());
      }
    } else {
      return Invalid(absl::StrCat("prompt[", i, "]: must be a non-empty string or token id array"));
    }
    // echo + logprobs: prompt logprobs are part of the answer (lm-eval scoring).
    if (echo && p.logprobs) p.prompt_logprobs = true;
    out.push_back(std::move(p));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(const HttpApiOptions& options, Generator* generator,
                                                        Auth* auth, GatewayMetrics* metrics, ChatmlOptions chatml) {
  std::call_once(g_civetweb_init, [] { mg_init_library(0); });
  std::unique_ptr<HttpApi> api(new HttpApi());
  api->generator_ = generator;
  api->auth_ = auth;
  api->metrics_ = metrics;
  api->chatml_ = std::move(chatml);
  api->tls_ = options.tls;
  const bool tls = !options.tls.cert_file.empty() || !options.tls.key_file.empty();
  if (tls) {
    if (options.tls.cert_file.empty() || options.tls.key_file.empty()) {
      return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
    }
    if (absl::Status s = InitCivetwebTls(); !s.ok()) return s;
    if (absl::Status s = CheckTlsFiles(options.tls); !s.ok()) return s;
  }
  // civetweb's port syntax: "[addr:]port", with "s" for an HTTPS-only port.
  std::string listen = (options.host.empty() || options.host == "0.0.0.0") ? std::to_string(options.port)
                                                                           : absl::StrCat(options.host, ":", options.port);
  if (tls) listen += "s";
  std::string threads = std::to_string(options.threads);
  std::vector<const char*> opts = {"listening_ports", listen.c_str(), "num_threads", threads.c_str(),
                                   "enable_keep_alive", "yes", "request_timeout_ms", "3600000"};
  opts.push_back(nullptr);
  mg_callbacks callbacks{};
  callbacks.log_message = [](const mg_connection*, const char* msg) {
    PHI_LOG(WARNING, "http_server").Str("message", msg);
    return 1;
  };
  // The certificate and key are loaded by us (separate files, errors naming them), not from
  // civetweb's ssl_certificate option (one file holding both).
  if (tls) callbacks.init_ssl = &ConfigureCivetwebSslContext;
  api->ctx_ = mg_start(&callbacks, tls ? &api->tls_ : nullptr, opts.data());
  if (!api->ctx_) {
    return absl::UnavailableError(absl::StrCat("HTTP API cannot listen on ", options.host, ":", options.port,
                                               " (port in use or not permitted)"));
  }
  mg_server_port ports[1];
  if (mg_get_server_ports(api->ctx_, 1, ports) >= 1) api->port_ = ports[0].port;
  mg_set_request_handler(api->ctx_, "/", &HttpApi::Handle, api.get());
  return api;
}

HttpApi::~HttpApi() {
  if (ctx_) mg_stop(ctx_);
}

int HttpApi::Handle(mg_connection* conn, void* self) {
  auto* api = static_cast<HttpApi*>(self);
  api->in_flight_.fetch_add(1);
  int code = api->Dispatch(conn);
  api->in_flight_.fetch_sub(1);
  return code;
}

bool HttpApi::Drain(double seconds) {
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return in_flight_.load() == 0;
}

int HttpApi::Dispatch(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string method = info->request_method, uri = info->local_uri ? info->local_uri : "";
  const char* auth_header = mg_get_header(conn, "Authorization");
  const std::string auth = auth_header ? auth_header : "";
  if (uri == "/health" || uri == "/healthz") {
    bool ok = !draining_.load() && !generator_->pool()->Models().empty();
    Reply(conn, ok ? 200 : 503, ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}");
    return ok ? 200 : 503;
  }
  if (uri == "/v1/models") {
    if (method != "GET") return ReplyError(conn, absl::InvalidArgumentError("GET /v1/models only")), 405;
    return Models(conn, auth);
  }
  if (uri != "/v1/chat/completions" && uri != "/v1/completions") {
    return ReplyError(conn, absl::NotFoundError(absl::StrCat("no route ", method, " ", uri)));
  }
  if (method != "POST") {
    Reply(conn, 405, OpenAiError(absl::InvalidArgumentError(absl::StrCat(uri, ": use POST"))).dump());
    return 405;
  }
  if (draining_.load()) return ReplyError(conn, absl::UnavailableError("the gateway is shutting down"));
  std::string body;
  char buf[16384];
  int n;
  while ((n = mg_read(conn, buf, sizeof buf)) > 0) {
    body.append(buf, n);
    if (body.size() > (64u << 20)) return ReplyError(conn, absl::InvalidArgumentError("body: larger than 64 MiB"));
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return ReplyError(conn, absl::InvalidArgumentError("body: not valid JSON"));
  return uri == "/v1/chat/completions" ? ChatCompletions(conn, j, auth) : Completions(conn, j, auth);
}

int HttpApi::Models(mg_connection* conn, const std::string& auth) {
  absl::Status s = auth_->Check(auth);
  metrics_->CountRequest("http_models", std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code())));
  if (!s.ok()) return ReplyError(conn, s);
  json data = json::array();
  for (const auto& m : generator_->pool()->Models()) {
    data.push_back({{"id", m.name}, {"object", "model"}, {"created", 0}, {"owned_by", "phi-serve"},
                    {"max_context_tokens", m.max_context_tokens}});
  }
  Reply(conn, 200, json{{"object", "list"}, {"data", data}}.dump());
  return 200;
}

int HttpApi::ChatCompletions(mg_connection* conn, const json& body, const std::string& auth) {
  const std::string route = "http_chat_completions";
  auto count = [&](const absl::Status& s) {
    metrics_->CountRequest(route, std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code())));
  };
  absl::StatusOr<AdmissionLease> lease = auth_->Admit(auth);
  if (!lease.ok()) return count(lease.status()), ReplyError(conn, lease.status());
  absl::StatusOr<GenerateParams> params = ParamsFromOpenAiChat(body, chatml_);
  if (!params.ok()) return count(params.status()), ReplyError(conn, params.status());
  const bool stream = body.value("stream", false);
  bool include_usage = false;
  if (body.contains("stream_options") && body["stream_options"].is_object()) {
    include_usage = body["stream_options"].value("include_usage", false);
  }
  const std::string id = absl::StrCat("chatcmpl-", next_id_.fetch_add(1));
  const int64_t created = UnixNow();
  GenerateResult r;
  if (!stream) {
    std::string text;
    std::vector<phi::v1::PositionLogprobs> lps;
    absl::Status s = generator_->Run(*params,
                                     [&](GenerateDelta&& d) {
                                       text += d.text;
                                       lps.insert(lps.end(), d.logprobs.begin(), d.logprobs.end());
                                       return true;
                                     },
                                     &r);
    count(s);
    if (!s.ok()) return ReplyError(conn, s);
    json choice = {{"index", 0},
                   {"message", {{"role", "assistant"}, {"content", text}}},
                   {"finish_reason", OpenAiFinishReason(r.finish_reason)},
                   {"logprobs", params->logprobs ? ChatLogprobs(lps) : json(nullptr)}};
    json resp = {{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", r.model},
                 {"choices", json::array({choice})},
                 {"usage", {{"prompt_tokens", r.usage.prompt_tokens()},
                            {"completion_tokens", r.usage.completion_tokens()},
                            {"total_tokens", r.usage.prompt_tokens() + r.usage.completion_tokens()}}},
                 {"system_fingerprint", nullptr}};
    Reply(conn, 200, resp.dump());
    return 200;
  }
  // Streaming: headers go out with the first event, so errors found before
  // generation starts (validation, no worker) still get a proper status code.
  bool started = false;
  std::string model;
  auto chunk = [&](const json& delta, const json& finish, const json& logprobs) {
    json c = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", r.model},
              {"choices", json::array({{{"index", 0}, {"delta", delta}, {"logprobs", logprobs},
                                        {"finish_reason", finish}}})}};
    return c.dump();
  };
  absl::Status s = generator_->Run(*params,
                                   [&](GenerateDelta&& d) {
                                     if (!started) {
                                       started = true;
                                       StartSse(conn);
                                       if (!SendEvent(conn, chunk({{"role", "assistant"}, {"content", ""}}, nullptr,
                                                                  nullptr))) {
                                         return false;
                                       }
                                     }
                                     return SendEvent(conn, chunk({{"content", d.text}}, nullptr,
                                                                  params->logprobs ? ChatLogprobs(d.logprobs)
                                                                                   : json(nullptr)));
                                   },
                                   &r);
  count(s);
  if (!s.ok()) {
    if (!started) return ReplyError(conn, s);
    SendEvent(conn, OpenAiError(s).dump());  // error after the stream began
    return 200;
  }
  if (!started) {
    StartSse(conn);
    SendEvent(conn, chunk({{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
  }
  SendEvent(conn, chunk(json::object(), OpenAiFinishReason(r.finish_reason), nullptr));
  if (include_usage) {
    json u = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", r.model},
              {"choices", json::array()},
              {"usage", {{"prompt_tokens", r.usage.prompt_tokens()},
                         {"completion_tokens", r.usage.completion_tokens()},
                         {"total_tokens", r.usage.prompt_tokens() + r.usage.completion_tokens()}}}};
    SendEvent(conn, u.dump());
  }
  SendEvent(conn, "[DONE]");
  return 200;
}

int HttpApi::Completions(mg_connection* conn, const json& body, const std::string& auth) {
  const std::string route = "http_completions";
  auto count = [&](const absl::Status& s) {
    metrics_->CountRequest(route, std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code())));
  };
  absl::StatusOr<AdmissionLease> lease = auth_->Admit(auth);
  if (!lease.ok()) return count(lease.status()), ReplyError(conn, lease.status());
  absl::StatusOr<std::vector<GenerateParams>> all = ParamsFromOpenAiCompletion(body);
  if (!all.ok()) return count(all.status()), ReplyError(conn, all.status());
  const bool stream = body.value("stream", false);
  const bool echo = body.value("echo", false);
  const std::string id = absl::StrCat("cmpl-", next_id_.fetch_add(1));
  const int64_t created = UnixNow();
  json choices = json::array();
  int64_t prompt_tokens = 0, completion_tokens = 0;
  std::string model;
  bool started = false;
  for (size_t i = 0; i < all->size(); ++i) {
    GenerateParams& p = (*all)[i];
    // max_tokens 0 with echo (scoring only): generate one token, return none.
    const bool score_only = p.stopping.max_new_tokens() == 0;
    if (score_only) {
      if (!echo) {
        absl::Status s = Invalid("max_tokens: 0 is allowed only with echo");
        return count(s), ReplyError(conn, s);
      }
      p.stopping.set_max_new_tokens(1);
    }
    if (echo && p.echo_text.empty() && !p.prompt_ids.empty()) {
      auto text = generator_->tokenizer()->Decode(p.prompt_ids, false, Deadline::max());
      if (!text.ok()) return count(text.status()), ReplyError(conn, text.status());
      p.echo_text = *text;
    }
    std::string echo_text = p.echo_text;
    if (score_only) p.echo_text.clear();
    GenerateResult r;
    std::string text;
    std::vector<phi::v1::PositionLogprobs> prompt_lps, lps;
    absl::Status s = generator_->Run(
        p,
        [&](GenerateDelta&& d) {
          prompt_lps.insert(prompt_lps.end(), d.prompt_logprobs.begin(), d.prompt_logprobs.end());
          if (score_only) return true;
          lps.insert(lps.end(), d.logprobs.begin(), d.logprobs.end());
          if (!stream) {
            text += d.text;
            return true;
          }
          if (!started) {
            started = true;
            StartSse(conn);
          }
          json c = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", r.model},
                    {"choices", json::array({{{"index", i}, {"text", d.text}, {"logprobs", nullptr},
                                              {"finish_reason", nullptr}}})}};
          return SendEvent(conn, c.dump());
        },
        &r);
    count(s);
    if (!s.ok()) {
      if (!started) return ReplyError(conn, s);
      SendEvent(conn, OpenAiError(s).dump());
      return 200;
    }
    model = r.model;
    prompt_tokens += r.usage.prompt_tokens();
    completion_tokens += score_only ? 0 : r.usage.completion_tokens();
    if (score_only) text = echo_text;
    json logprobs = nullptr;
    if (p.logprobs) {
      // Legacy completions logprobs: parallel arrays over the returned tokens.
      json tokens = json::array(), token_lps = json::array(), tops = json::array(), offsets = json::array();
      size_t offset = 0;
      auto add = [&](const phi::v1::PositionLogprobs* pos, const std::string& tok_text) {
        tokens.push_back(tok_text);
        offsets.push_back(offset);
        offset += tok_text.size();
        if (!pos) {
          token_lps.push_back(nullptr);
          tops.push_back(nullptr);
          return;
        }
        token_lps.push_back(pos->token().logprob());
        json top = json::object();
        for (const auto& t : pos->top()) top[t.text()] = t.logprob();
        if (top.empty()) top[pos->token().text()] = pos->token().logprob();
        tops.push_back(top);
      };
      if (echo) {
        // The first prompt token has no logprob (nothing precedes it).
        std::vector<int32_t> prompt_ids = p.prompt_ids;
        if (prompt_ids.empty() && !prompt_lps.empty()) {
          // Ids of the prompt: the first one is not in prompt_logprobs; recover it by encoding.
          auto enc = generator_->tokenizer()->Encode(p.prompt, true, Deadline::max());
          if (enc.ok()) prompt_ids = *enc;
        }
        if (!prompt_ids.empty()) {
          auto first = generator_->tokenizer()->DecodeEach({prompt_ids[0]}, Deadline::max());
          add(nullptr, first.ok() ? (*first)[0] : "");
        }
        for (const auto& pl : prompt_lps) add(&pl, pl.token().text());
      }
      if (!score_only || true) {
        for (const auto& l : lps) add(&l, l.token().text());
      }
      logprobs = {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops},
                  {"text_offset", offsets}};
    }
    if (!stream) {
      choices.push_back({{"index", i}, {"text", text}, {"logprobs", logprobs},
                         {"finish_reason", OpenAiFinishReason(r.finish_reason)}});
    } else {
      if (!started) {
        started = true;
        StartSse(conn);
      }
      json c = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", r.model},
                {"choices", json::array({{{"index", i}, {"text", ""}, {"logprobs", logprobs},
                                          {"finish_reason", OpenAiFinishReason(r.finish_reason)}}})}};
      SendEvent(conn, c.dump());
    }
  }
  if (stream) {
    SendEvent(conn, "[DONE]");
    return 200;
  }
  json resp = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
               {"choices", choices},
               {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
                          {"total_tokens", prompt_tokens + completion_tokens}}}};
  Reply(conn, 200, resp.dump());
  return 200;
}

}  // namespace phi::gateway
