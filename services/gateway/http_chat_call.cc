#include "services/gateway/http_api.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/gateway/generation.h"
#include "services/gateway/http_responses.h"

namespace phi::gateway {

using nlohmann::json;

// One chat completion: a GenerationSink writing to the exchange.
class HttpApi::ChatCall final : public HttpApi::LiveCall,
                                public GenerationSink,
                                public std::enable_shared_from_this<HttpApi::ChatCall> {
 public:
  ChatCall(HttpApi* api, std::shared_ptr<HttpExchange> ex, ChatCompletionRequest req, AdmissionLease lease,
           std::string request_id)
      : api_(api),
        ex_(std::move(ex)),
        req_(std::move(req)),
        lease_(std::move(lease)),
        request_id_(std::move(request_id)),
        id_(absl::StrCat("chatcmpl-", RandomHex())),
        created_(UnixNow()),
        model_(ModelForChunks(req_.params.model, api->generations_->pool())),
        choices_(std::max(1, req_.params.n)) {}

  void Begin() {
    api_->Track(shared_from_this());
    ex_->OnClientGone([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->CancelGeneration();
    });
    req_.params.request_id = request_id_;
    std::shared_ptr<Generation> g = api_->generations_->Start(req_.params, this);
    bool cancel;
    {
      std::lock_guard<std::mutex> l(gen_mu_);
      generation_ = g;
      cancel = cancelled_;
    }
    if (cancel) g->Cancel();
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
      if (!ex_->Write(SseEvent(Chunk(d.index, {{"content", d.text}}, nullptr, logprobs)))) {
        closed_ = true;
        gone = true;
      }
    }
    if (gone) CancelGeneration();
  }

  void OnEnd(const absl::Status& status, GenerateResult&& r) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!r.model.empty()) model_ = r.model;
      if (!closed_) {
        closed_ = true;
        if (!status.ok()) {
          FailLocked(ClientFieldError(status, req_.constraint_param));
        } else if (req_.stream) {
          StartStreamLocked();
          for (const ChoiceResult& c : ChoiceEnds(r)) {
            ex_->Write(SseEvent(Chunk(c.index, json::object(), OpenAiFinishReason(c.finish_reason), nullptr)));
          }
          if (req_.include_usage) {
            json u = ChunkBase();
            u["choices"] = json::array();
            u["usage"] = UsageJson(r.usage, r.usage.completion_tokens());
            ex_->Write(SseEvent(DumpJson(u)));
          }
          EndSse(*ex_);
        } else {
          RespondJson(ex_, 200, ResponseLocked(r), request_id_);
        }
      }
    }
    api_->CountRequest("http_chat_completions", status);
    api_->Untrack(this);  // may free this object: last
  }

  bool Abort(const absl::Status& status) override {
    bool was_open;
    {
      std::lock_guard<std::mutex> l(mu_);
      was_open = !closed_;
      if (was_open) {
        closed_ = true;
        FailLocked(status);
      }
    }
    CancelGeneration();
    return was_open;
  }

 private:
  void CancelGeneration() {
    std::shared_ptr<Generation> g;
    {
      std::lock_guard<std::mutex> l(gen_mu_);
      cancelled_ = true;
      g = generation_;
    }
    if (g) g->Cancel();
  }

  json ChunkBase() const {
    return {{"id", id_},
            {"object", "chat.completion.chunk"},
            {"created", created_},
            {"model", model_},
            {"system_fingerprint", SystemFingerprint()}};
  }

  std::string Chunk(int index, const json& delta, const json& finish, const json& logprobs) const {
    json c = ChunkBase();
    c["choices"] =
        json::array({{{"index", index}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", finish}}});
    return DumpJson(c);
  }

  // Each choice's stream opens with the role, as OpenAI's.
  void StartStreamLocked() {
    if (started_) return;
    started_ = true;
    StartSse(*ex_, request_id_);
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
    return {{"id", id_},
            {"object", "chat.completion"},
            {"created", created_},
            {"model", r.model},
            {"choices", std::move(choices)},
            {"usage", UsageJson(r.usage, r.usage.completion_tokens())},
            {"system_fingerprint", SystemFingerprint()}};
  }

  void FailLocked(const absl::Status& status) { FailExchange(ex_, started_, status, request_id_); }

  HttpApi* const api_;
  const std::shared_ptr<HttpExchange> ex_;
  ChatCompletionRequest req_;
  AdmissionLease lease_;
  const std::string request_id_;
  const std::string id_;
  const int64_t created_;

  std::mutex mu_;  // the response; never held together with gen_mu_
  std::string model_;
  bool started_ = false;
  bool closed_ = false;
  std::vector<ChoiceText> choices_;  // non-streaming: each choice's text and logprobs, by index

  std::mutex gen_mu_;
  bool cancelled_ = false;
  std::shared_ptr<Generation> generation_;
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
