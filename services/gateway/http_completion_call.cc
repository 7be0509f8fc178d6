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

// One legacy completion request: one generation per prompt, all at once; the response (or the
// stream's last chunks) once every prompt has ended.
class HttpApi::CompletionCall final : public HttpSseCall,
                                      public std::enable_shared_from_this<HttpApi::CompletionCall> {
 public:
  CompletionCall(HttpApi* api, std::shared_ptr<HttpExchange> ex, CompletionRequest req, AdmissionLease lease,
                 std::string request_id)
      : HttpSseCall(std::move(ex), std::move(request_id), absl::StrCat("cmpl-", RandomHex()), "text_completion",
                    ModelForChunks(req.model, api->generations_->pool())),
        api_(api),
        req_(std::move(req)),
        lease_(std::move(lease)),
        n_(req_.prompts.empty() ? 1 : std::max(1, req_.prompts[0].n)) {
    prompts_.resize(req_.prompts.size());
    for (size_t i = 0; i < prompts_.size(); ++i) {
      prompts_[i].call = this;
      prompts_[i].index = i;
      prompts_[i].choices.resize(n_);
    }
  }

  // Runs on the blocking executor when a token-id prompt needs its text for echo.
  void Begin() {
    api_->Track(shared_from_this());
    ex_->OnClientGone([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->CancelGenerations();
    });
    for (size_t i = 0; i < prompts_.size(); ++i) {
      GenerateParams& p = req_.prompts[i];
      p.request_id = prompts_.size() == 1 ? request_id_ : absl::StrCat(request_id_, "-", i);
      if (req_.echo && p.echo_text.empty() && !p.prompt_ids.empty()) {
        auto text = api_->generations_->tokenizer()->Decode(p.prompt_ids, false, Deadline::max());
        if (!text.ok()) {
          EndResponse(text.status(), [] {});
          return;
        }
        p.echo_text = *text;
      }
      prompts_[i].echo_text = p.echo_text;
      if (req_.score_only) p.echo_text.clear();  // scoring: the prompt comes back once, with its logprobs
    }
    for (size_t i = 0; i < prompts_.size(); ++i) {
      AddGeneration(api_->generations_->Start(req_.prompts[i], &prompts_[i]));
    }
  }

 private:
  struct ChoiceText {
    std::string text;
    std::vector<phi::v1::PositionLogprobs> lps;
  };
  struct PromptSink final : public GenerationSink {
    CompletionCall* call = nullptr;
    size_t index = 0;
    std::string echo_text;
    std::vector<ChoiceText> choices;  // n of them
    std::vector<phi::v1::PositionLogprobs> prompt_lps;  // the same for every choice
    absl::Status status;
    GenerateResult result;
    void OnDelta(GenerateDelta&& d) override { call->OnPromptDelta(this, std::move(d)); }
    void OnEnd(const absl::Status& s, GenerateResult&& r) override { call->OnPromptEnd(this, s, std::move(r)); }
  };

  void Release(const absl::Status& status) override {
    api_->CountRequest("http_completions", status, model_);
    api_->Untrack(this);  // may free this object: last
  }

  void OnPromptDelta(PromptSink* p, GenerateDelta&& d) {
    bool gone = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (closed_) return;
      p->prompt_lps.insert(p->prompt_lps.end(), std::make_move_iterator(d.prompt_logprobs.begin()),
                           std::make_move_iterator(d.prompt_logprobs.end()));
      if (req_.score_only) return;
      const size_t c = d.index > 0 ? static_cast<size_t>(d.index) : 0;
      if (c >= p->choices.size()) p->choices.resize(c + 1);
      ChoiceText& choice = p->choices[c];
      choice.lps.insert(choice.lps.end(), std::make_move_iterator(d.logprobs.begin()),
                        std::make_move_iterator(d.logprobs.end()));
      if (!req_.stream) {
        choice.text += d.text;
        return;
      }
      StartStreamLocked();
      gone = !WriteEventLocked(Chunk(p->index * n_ + c, d.text, nullptr, nullptr));
    }
    if (gone) CancelGenerations();
  }

  void OnPromptEnd(PromptSink* p, const absl::Status& s, GenerateResult&& r) {
    bool last;
    bool failed;
    {
      std::lock_guard<std::mutex> l(mu_);
      p->status = s;
      p->result = std::move(r);
      if (!p->result.model.empty()) model_ = p->result.model;
      last = ++ended_ == prompts_.size();
      failed = !s.ok() && first_error_.ok();
      if (failed) first_error_ = ClientFieldError(s, req_.constraint_param);
    }
    if (failed) CancelGenerations();  // one prompt failed: the request fails, stop the others
    if (!last) return;
    // The logprob texts of echoed prompts may need tokenizer calls: off gRPC's threads.
    auto self = shared_from_this();
    api_->blocking_->Post([self] { self->Finish(); });
  }

  json LegacyLogprobs(PromptSink* p, const ChoiceText& choice) {
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
    if (req_.echo) {
      // The first prompt token has no logprob (nothing precedes it); the generation decoded its
      // text with the prompt's others (echo with logprobs asks for prompt logprobs).
      if (p->result.prompt_first_token_id >= 0) add(nullptr, p->result.prompt_first_token_text);
      for (const auto& pl : p->prompt_lps) add(&pl, pl.token().text());
    }
    if (!req_.score_only) {
      for (const auto& l : choice.lps) add(&l, l.token().text());
    }
    return {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
  }

  // Every prompt has ended (on the blocking executor).
  void Finish() {
    absl::Status status;
    {
      std::lock_guard<std::mutex> l(mu_);
      status = first_error_;
    }
    // By response choice: prompt i's choice c is index i * n + c.
    std::vector<json> logprobs(prompts_.size() * n_);
    if (status.ok() && req_.prompts[0].logprobs) {
      for (PromptSink& p : prompts_) {
        for (size_t c = 0; c < n_ && c < p.choices.size(); ++c) {
          logprobs[p.index * n_ + c] = LegacyLogprobs(&p, p.choices[c]);
        }
      }
    }
    EndResponse(status, [&] { FinishLocked(logprobs); });
  }

  void FinishLocked(std::vector<json>& logprobs) {
    phi::v1::Usage usage;
    int64_t completion_tokens = 0;
    for (const PromptSink& p : prompts_) {
      usage.set_prompt_tokens(usage.prompt_tokens() + p.result.usage.prompt_tokens());
      usage.set_cached_prompt_tokens(usage.cached_prompt_tokens() + p.result.usage.cached_prompt_tokens());
      if (!req_.score_only) completion_tokens += p.result.usage.completion_tokens();
    }
    if (req_.stream) {
      StartStreamLocked();
      for (PromptSink& p : prompts_) {
        // Scoring only: the echoed prompt is the whole text.
        std::string text = req_.score_only ? p.echo_text : "";
        for (const ChoiceResult& c : ChoiceEnds(p.result)) {
          const size_t i = p.index * n_ + static_cast<size_t>(c.index);
          if (i >= logprobs.size()) continue;
          ex_->Write(SseEvent(Chunk(i, text, logprobs[i], OpenAiFinishReason(c.finish_reason))));
        }
      }
      if (req_.include_usage) WriteUsageEventLocked(usage, completion_tokens);
      EndSse(*ex_);
      return;
    }
    json choices = json::array();
    for (PromptSink& p : prompts_) {
      for (const ChoiceResult& c : ChoiceEnds(p.result)) {
        const size_t i = p.index * n_ + static_cast<size_t>(c.index);
        if (i >= logprobs.size() || static_cast<size_t>(c.index) >= p.choices.size()) continue;
        choices.push_back({{"index", i},
                           {"text", req_.score_only ? p.echo_text : p.choices[c.index].text},
                           {"logprobs", std::move(logprobs[i])},
                           {"finish_reason", OpenAiFinishReason(c.finish_reason)}});
      }
    }
    json resp = Envelope("text_completion", model_);
    resp["choices"] = std::move(choices);
    resp["usage"] = UsageJson(usage, completion_tokens);
    RespondJson(ex_, 200, resp, request_id_);
  }

  std::string Chunk(size_t index, const std::string& text, const json& logprobs, const json& finish) const {
    return ChunkWithChoice({{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}});
  }

  HttpApi* const api_;
  CompletionRequest req_;
  AdmissionLease lease_;
  const size_t n_;  // choices per prompt
  std::vector<PromptSink> prompts_;  // sized once: generations hold pointers into it

  // Under mu_.
  size_t ended_ = 0;
  absl::Status first_error_;
};

void HttpApi::Completions(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id) {
  const std::string route = "http_completions";
  absl::StatusOr<AdmissionLease> lease = auth_->Admit(std::string(ex->request().Header("Authorization")));
  if (!lease.ok()) return Refuse(route, ex, lease.status(), request_id);
  absl::StatusOr<CompletionRequest> req = ParseCompletionRequest(ex->request().body, limits_);
  if (!req.ok()) return Refuse(route, ex, req.status(), request_id);
  bool needs_decode = false;
  for (const auto& p : req->prompts) needs_decode |= req->echo && p.echo_text.empty() && !p.prompt_ids.empty();
  auto call = std::make_shared<CompletionCall>(this, ex, std::move(*req), std::move(*lease), request_id);
  if (needs_decode) {
    blocking_->Post([call] { call->Begin(); }, /*ahead=*/true);
  } else {
    call->Begin();
  }
}

}  // namespace phi::gateway
