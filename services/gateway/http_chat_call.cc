#include "services/gateway/http_api.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/gateway/generation.h"
#include "services/gateway/http_responses.h"
#include "services/gateway/http_sse_call.h"

namespace phi::gateway {

using nlohmann::json;

// One chat completion: a GenerationSink writing to the exchange.
class HttpApi::ChatCall final : public HttpSseCall,
                                public GenerationSink,
                                public std::enable_shared_from_this<HttpApi::ChatCall> {
 public:
  ChatCall(HttpApi* api, std::shared_ptr<HttpExchange> ex, ChatCompletionRequest req, AdmissionLease lease,
           std::string request_id)
      : HttpSseCall(std::move(ex), std::move(request_id), absl::StrCat("chatcmpl-", RandomHex()),
                    "chat.completion.chunk", ModelForChunks(req.params.model, api->generations_->pool())),
        api_(api),
        req_(std::move(req)),
        lease_(std::move(lease)),
        choices_(std::max(1, req_.params.n)) {}

  void Begin() {
    api_->Track(shared_from_this());
    ex_->OnClientGone([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->CancelGenerations();
    });
    req_.params.request_id = request_id_;
    AddGeneration(api_->generations_->Start(req_.params, this));
  }

  void OnDelta(GenerateDelta&& d) override {
    bool gone = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (closed_) return;
      if (!req_.stream) {
        ChoiceText& c = ChoiceAt(d.index);
        c.text += d.text;
        c.lps.insert(c.lps.end(), std::make_move_iterator(d.logprobs.begin()),
                     std::make_move_iterator(d.logprobs.end()));
        return;
      }
      StartStreamLocked();
      json logprobs = req_.params.logprobs ? ChatLogprobs(d.logprobs) : json(nullptr);
      gone = !WriteEventLocked(Chunk(d.index, {{"content", d.text}}, nullptr, logprobs));
    }
    if (gone) CancelGenerations();
  }

  void OnEnd(const absl::Status& status, GenerateResult&& r) override {
    EndResponse(status.ok() ? status : ClientFieldError(status, req_.constraint_param), [&] {
      if (!r.model.empty()) model_ = r.model;
      if (!req_.stream) {
        RespondJson(ex_, 200, ResponseLocked(r), request_id_);
        return;
      }
      StartStreamLocked();
      for (const ChoiceResult& c : ChoiceEnds(r)) {
        ex_->Write(SseEvent(Chunk(c.index, json::object(), OpenAiFinishReason(c.finish_reason), nullptr)));
      }
      if (req_.include_usage) WriteUsageEventLocked(r.usage, r.usage.completion_tokens());
      EndSse(*ex_);
    });
  }

 private:
  void Release(const absl::Status& status) override {
    api_->CountRequest("http_chat_completions", status, model_);
    api_->Untrack(this);  // may free this object: last
  }

  std::string Chunk(int index, const json& delta, const json& finish, const json& logprobs) const {
    return ChunkWithChoice({{"index", index}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", finish}});
  }

  // Each choice's stream opens with the role, as OpenAI's.
  void OpenStreamLocked() override {
    for (size_t i = 0; i < choices_.size(); ++i) {
      ex_->Write(SseEvent(Chunk(static_cast<int>(i), {{"role", "assistant"}, {"content", ""}}, nullptr, nullptr)));
    }
  }

  struct ChoiceText {
    std::string text;
    std::vector<phi::v1::PositionLogprobs> lps;
  };

  ChoiceText& ChoiceAt(int index) {
    const size_t i = index < 0 ? 0 : static_cast<size_t>(index);
    if (i >= choices_.size()) choices_.resize(i + 1);
    return choices_[i];
  }

  json ResponseLocked(const GenerateResult& r) {
    json choices = json::array();
    for (const ChoiceResult& c : ChoiceEnds(r)) {
      ChoiceText& t = ChoiceAt(c.index);
      choices.push_back({{"index", c.index},
                         {"message", {{"role", "assistant"}, {"content", t.text}}},
                         {"finish_reason", OpenAiFinishReason(c.finish_reason)},
                         {"logprobs", req_.params.logprobs ? ChatLogprobs(t.lps) : json(nullptr)}});
    }
    json response = Envelope("chat.completion", r.model);
    response["choices"] = std::move(choices);
    response["usage"] = UsageJson(r.usage, r.usage.completion_tokens());
    return response;
  }

  HttpApi* const api_;
  ChatCompletionRequest req_;
  AdmissionLease lease_;
  std::vector<ChoiceText> choices_;  // under mu_; non-streaming: each choice's text and logprobs, by index
};

void HttpApi::ChatCompletions(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id) {
  const std::string route = "http_chat_completions";
  absl::StatusOr<AdmissionLease> lease = auth_->Admit(std::string(ex->request().Header("Authorization")));
  if (!lease.ok()) return Refuse(route, ex, lease.status(), request_id);
  absl::StatusOr<ChatCompletionRequest> req = ParseChatCompletionRequest(ex->request().body, chatml_, limits_);
  if (!req.ok()) return Refuse(route, ex, req.status(), request_id);
  auto call = std::make_shared<ChatCall>(this, ex, std::move(*req), std::move(*lease), request_id);
  call->Begin();
}

}  // namespace phi::gateway
