#include "services/gateway/http_sse_call.h"

#include <utility>

#include "services/gateway/http_responses.h"

namespace phi::gateway {

using nlohmann::json;

HttpSseCall::HttpSseCall(std::shared_ptr<HttpExchange> ex, std::string request_id, std::string id,
                         std::string chunk_object, std::string model)
    : ex_(std::move(ex)),
      request_id_(std::move(request_id)),
      model_(std::move(model)),
      id_(std::move(id)),
      chunk_object_(std::move(chunk_object)),
      created_(UnixNow()) {}

bool HttpSseCall::Abort(const absl::Status& status) {
  bool was_open;
  {
    std::lock_guard<std::mutex> l(mu_);
    was_open = !closed_;
    if (was_open) {
      closed_ = true;
      FailLocked(status);
    }
  }
  CancelGenerations();
  return was_open;
}

void HttpSseCall::AddGeneration(std::shared_ptr<Generation> generation) {
  bool cancel;
  {
    std::lock_guard<std::mutex> l(gen_mu_);
    generations_.push_back(generation);
    cancel = cancelled_;
  }
  if (cancel) generation->Cancel();
}

void HttpSseCall::CancelGenerations() {
  std::vector<std::shared_ptr<Generation>> generations;
  {
    std::lock_guard<std::mutex> l(gen_mu_);
    cancelled_ = true;
    generations = generations_;
  }
  for (auto& g : generations) g->Cancel();
}

void HttpSseCall::EndResponse(const absl::Status& status, absl::FunctionRef<void()> respond_locked) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!closed_) {
      closed_ = true;
      if (status.ok()) {
        respond_locked();
      } else {
        FailLocked(status);
      }
    }
  }
  Release(status);  // may free this object: last
}

void HttpSseCall::StartStreamLocked() {
  if (started_) return;
  started_ = true;
  StartSse(*ex_, request_id_);
  OpenStreamLocked();
}

bool HttpSseCall::WriteEventLocked(const std::string& data) {
  if (ex_->Write(SseEvent(data))) return true;
  closed_ = true;
  return false;
}

void HttpSseCall::WriteUsageEventLocked(const phi::v1::Usage& usage, int64_t completion_tokens) {
  json u = Envelope(chunk_object_, model_);
  u["choices"] = json::array();
  u["usage"] = UsageJson(usage, completion_tokens);
  ex_->Write(SseEvent(DumpJson(u)));
}

void HttpSseCall::FailLocked(const absl::Status& status) { FailExchange(ex_, started_, status, request_id_); }

json HttpSseCall::Envelope(std::string_view object, const std::string& model) const {
  return {{"id", id_},
          {"object", object},
          {"created", created_},
          {"model", model},
          {"system_fingerprint", SystemFingerprint()}};
}

std::string HttpSseCall::ChunkWithChoice(json choice) const {
  json c = Envelope(chunk_object_, model_);
  c["choices"] = json::array({std::move(choice)});
  return DumpJson(c);
}

}  // namespace phi::gateway
