// OpenAI-shaped responses on an HttpExchange, shared by the HTTP API's calls (http_api.cc,
// http_chat_call.cc, http_completion_call.cc): JSON bodies and errors, server-sent events, and
// the pieces of chat and completion responses alike (ids, usage, chat logprobs).
#ifndef PHI_SERVICES_GATEWAY_HTTP_RESPONSES_H_
#define PHI_SERVICES_GATEWAY_HTTP_RESPONSES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "phi/v1/common.pb.h"
#include "services/gateway/generation_service.h"
#include "services/gateway/http_server.h"
#include "services/gateway/random_id.h"
#include "services/gateway/worker_pool.h"

namespace phi::gateway {

inline constexpr char kJsonContentType[] = "application/json";

// HTTP status for a status code (INVALID_ARGUMENT 400, NOT_FOUND 404, ...).
int HttpStatusFor(absl::StatusCode code);
// OpenAI's error object; "param" is the field named before ':' in the message.
nlohmann::json OpenAiError(const absl::Status& status);
std::string OpenAiFinishReason(phi::v1::FinishReason r);
// JSON text of `j`; invalid UTF-8 in strings (a token that ends mid-character) becomes U+FFFD
// instead of an exception.
std::string DumpJson(const nlohmann::json& j);

// Seconds since the Unix epoch (OpenAI's "created").
int64_t UnixNow();
// OpenAI's system_fingerprint: this build's version.
const std::string& SystemFingerprint();
// The model a response names before the worker has answered: the one asked for, or the one
// served when the request names none.
std::string ModelForChunks(const std::string& requested, WorkerPool* pool);

// Every response's headers: X-Request-Id.
HttpHeaders BaseHeaders(const std::string& request_id);
void RespondJson(const std::shared_ptr<HttpExchange>& ex, int code, const nlohmann::json& body,
                 const std::string& request_id);
// OpenAI's error JSON with the status's HTTP code (429 and 503 with Retry-After).
void RespondError(const std::shared_ptr<HttpExchange>& ex, const absl::Status& s, const std::string& request_id);

// One server-sent event: "data: <data>\n\n".
std::string SseEvent(const std::string& data);
// The status line and headers of an event stream (no caching, no proxy buffering).
void StartSse(HttpExchange& ex, const std::string& request_id);
// The end of an event stream: OpenAI's [DONE] event, then the end of the chunked body.
void EndSse(HttpExchange& ex);
// An error before anything was sent: its HTTP status; after: an SSE error event ending the stream.
void FailExchange(const std::shared_ptr<HttpExchange>& ex, bool started, const absl::Status& status,
                  const std::string& request_id);

nlohmann::json UsageJson(const phi::v1::Usage& u, int64_t completion_tokens);
// The result's choices in index order; one for choice 0 when it lists none.
std::vector<ChoiceResult> ChoiceEnds(const GenerateResult& r);
// A chat choice's "logprobs": {"content": [{token, logprob, bytes, top_logprobs}, ...]}.
nlohmann::json ChatLogprobs(const std::vector<phi::v1::PositionLogprobs>& lps);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_RESPONSES_H_
