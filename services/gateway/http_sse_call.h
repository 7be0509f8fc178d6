// What the HTTP API's generating calls share (http_chat_call.cc, http_completion_call.cc): one
// response on an exchange, sent as a JSON body or as an event stream and closed exactly once;
// the envelope OpenAI gives every chunk and response of a call (id, object, created, model); and
// the generations to cancel when the client goes away or Drain() aborts the call.
#ifndef PHI_SERVICES_GATEWAY_HTTP_SSE_CALL_H_
#define PHI_SERVICES_GATEWAY_HTTP_SSE_CALL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "phi/v1/common.pb.h"
#include "services/gateway/generation.h"
#include "services/gateway/http_api.h"
#include "services/gateway/http_server.h"

namespace phi::gateway {

class HttpSseCall : public HttpApi::LiveCall {
 public:
  // Ends the response now with `status` (an SSE error event once the stream has begun) and
  // cancels the generations. True when the response was still open.
  bool Abort(const absl::Status& status) final;

 protected:
  // `id`: the response id ("chatcmpl-..."); `chunk_object`: the chunks' "object";
  // `model`: the model chunks name until a generation reports the one that served it.
  HttpSseCall(std::shared_ptr<HttpExchange> ex, std::string request_id, std::string id, std::string chunk_object,
              std::string model);

  // A generation started for this call; cancelled at once when the call has been already.
  void AddGeneration(std::shared_ptr<Generation> generation);
  // Cancels the call's generations, and those added later.
  void CancelGenerations();

  // Closes the response unless it is closed already (client gone, aborted): with
  // `respond_locked` (run under mu_) when `status` is ok, else with the error `status`. Then
  // Release(status), so this object may be gone when it returns.
  void EndResponse(const absl::Status& status, absl::FunctionRef<void()> respond_locked);
  // The API's bookkeeping at the call's end: counts it on its route and drops the API's
  // reference (HttpApi's private members, which only its nested call classes reach).
  virtual void Release(const absl::Status& status) = 0;

  // The rest run under mu_.
  // Sends the event stream's headers once, then the subclass's opening events.
  void StartStreamLocked();
  virtual void OpenStreamLocked() {}
  // One event; when the client is gone, closes the response and returns false (the caller then
  // cancels the generations, outside mu_).
  bool WriteEventLocked(const std::string& data);
  // The stream's usage chunk (stream_options.include_usage): no choices, the request's usage.
  void WriteUsageEventLocked(const phi::v1::Usage& usage, int64_t completion_tokens);
  void FailLocked(const absl::Status& status);
  // {id, object, created, model, system_fingerprint}.
  nlohmann::json Envelope(std::string_view object, const std::string& model) const;
  // A chunk of the stream (the chunk object, model_) with one choice.
  std::string ChunkWithChoice(nlohmann::json choice) const;

  const std::shared_ptr<HttpExchange> ex_;
  const std::string request_id_;

  std::mutex mu_;  // the response; never held together with gen_mu_
  std::string model_;
  bool started_ = false;  // the stream's headers are sent
  bool closed_ = false;   // the response is complete, failed, or its client gone

 private:
  const std::string id_;
  const std::string chunk_object_;
  const int64_t created_;

  std::mutex gen_mu_;
  bool cancelled_ = false;
  std::vector<std::shared_ptr<Generation>> generations_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_HTTP_SSE_CALL_H_
