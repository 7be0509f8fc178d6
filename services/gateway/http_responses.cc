#include "services/gateway/http_responses.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace phi::gateway {

using nlohmann::json;

namespace {

json TokenBytes(const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); }

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
  // Our messages start with the parameter as the client spelled it: "max_tokens: ...".
  json param = nullptr;
  std::string msg(s.message());
  size_t colon = msg.find(':');
  if (type == "invalid_request_error" && colon != std::string::npos && colon > 0 && colon < 96 &&
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

std::string DumpJson(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }


int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const std::string& SystemFingerprint() {
  static const std::string fp = absl::StrCat("fp_phi-serve-", PHI_SERVE_VERSION);
  return fp;
}

// The model a response names before the worker has answered: the one asked for, or the one
// served when the request names none.
std::string ModelForChunks(const std::string& requested, WorkerPool* pool) {
  if (!requested.empty()) return requested;
  std::vector<ModelSummary> models = pool->Models();
  return models.empty() ? "" : models[0].name;
}

HttpHeaders BaseHeaders(const std::string& request_id) { return {{"X-Request-Id", request_id}}; }

void RespondJson(const std::shared_ptr<HttpExchange>& ex, int code, const json& body, const std::string& request_id) {
  ex->Respond(code, kJsonContentType, DumpJson(body), BaseHeaders(request_id));
}

void RespondError(const std::shared_ptr<HttpExchange>& ex, const absl::Status& s, const std::string& request_id) {
  HttpHeaders h = BaseHeaders(request_id);
  const int code = HttpStatusFor(s.code());
  if (code == 429 || code == 503) h.emplace_back("Retry-After", "1");
  ex->Respond(code, kJsonContentType, DumpJson(OpenAiError(s)), std::move(h));
}

std::string SseEvent(const std::string& data) { return absl::StrCat("data: ", data, "\n\n"); }

// The status line and headers of an event stream (no caching, no proxy buffering).
void StartSse(HttpExchange& ex, const std::string& request_id) {
  HttpHeaders h = BaseHeaders(request_id);
  h.emplace_back("Cache-Control", "no-cache");
  h.emplace_back("X-Accel-Buffering", "no");
  ex.StartStream(200, "text/event-stream", std::move(h));
}

// The end of an event stream: OpenAI's [DONE] event, then the end of the chunked body.
void EndSse(HttpExchange& ex) {
  ex.Write(SseEvent("[DONE]"));
  ex.End();
}

// An error before anything was sent: its HTTP status; after: an SSE error event ending the stream.
void FailExchange(const std::shared_ptr<HttpExchange>& ex, bool started, const absl::Status& status,
                  const std::string& request_id) {
  if (!started) {
    RespondError(ex, status, request_id);
    return;
  }
  ex->Write(SseEvent(DumpJson(OpenAiError(status))));
  EndSse(*ex);
}

json UsageJson(const phi::v1::Usage& u, int64_t completion_tokens) {
  return {{"prompt_tokens", u.prompt_tokens()},
          {"completion_tokens", completion_tokens},
          {"total_tokens", u.prompt_tokens() + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens()}}}};
}

// The result's choices in index order; one for choice 0 when it lists none.
std::vector<ChoiceResult> ChoiceEnds(const GenerateResult& r) {
  if (!r.choices.empty()) return r.choices;
  ChoiceResult c;
  c.finish_reason = r.finish_reason;
  c.seed = r.seed;
  c.completion_tokens = r.usage.completion_tokens();
  return {c};
}


json ChatLogprobs(const std::vector<phi::v1::PositionLogprobs>& lps) {
  json content = json::array();
  for (const auto& p : lps) {
    json top = json::array();
    for (const auto& t : p.top()) {
      top.push_back({{"token", t.text()}, {"logprob", t.logprob()}, {"bytes", TokenBytes(t.text())}});
    }
    content.push_back({{"token", p.token().text()},
                       {"logprob", p.token().logprob()},
                       {"bytes", TokenBytes(p.token().text())},
                       {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

}  // namespace phi::gateway
