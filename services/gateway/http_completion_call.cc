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

// One legacy completion request: one generation per prompt, all at once; the response (or the
// stream's last chunks) once every prompt has ended.
class HttpApi::CompletionCall final : public HttpApi::LiveCall,
                                      public std::enable_shared_from_this<HttpApi::CompletionCall> {
 public:
  CompletionCall(HttpApi* api, std::shared_ptr<HttpExchange> ex, CompletionRequest req, AdmissionLease lease,
                 std::string request_id)
      : api_(api),
        ex_(std::move(ex)),
        req_(std::move(req)),
        lease_(std::move(lease)),
        request_id_(std::move(request_id)),
        id_(absl::StrCat("cmpl-", RandomHex())),
        created_(UnixNow()),
        model_(ModelForChunks(req_.model, api->generations_->pool())),
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
      if (auto self = weak.lock()) self->CancelAll();
    });
    for (size_t i = 0; i < prompts_.size(); ++i) {
      GenerateParams& p = req_.prompts[i];
      p.request_id = prompts_.size() == 1 ? request_id_ : absl::StrCat(request_id_, "-", i);
      if (req_.echo && p.echo_text.empty() && !p.prompt_ids.empty()) {
        auto text = api_->generations_->tokenizer()->Decode(p.prompt_ids, false, Deadline::max());
        if (!text.ok()) {
          FailBeforeStart(text.status());
          return;
        }
        p.echo_text = *text;
      }
      prompts_[i].echo_text = p.echo_text;
      if (req_.score_only) p.echo_text.clear();  // scoring: the prompt comes back once, with its logprobs
    }
    for (size_t i = 0; i < prompts_.size(); ++i) {
      std::shared_ptr<Generation> g = api_->generations_->Start(req_.prompts[i], &prompts_[i]);
      std::lock_guard<std::mutex> l(gen_mu_);
      generations_.push_back(g);
      if (cancelled_) g->Cancel();
    }
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
    CancelAll();
    return was_open;
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

  void CancelAll() {
    std::vector<std::shared_ptr<Generation>> gs;
    {
      std::lock_guard<std::mutex> l(gen_mu_);
      cancelled_ = true;
      gs = generations_;
    }
    for (auto& g : gs) g->Cancel();
  }

  void FailBeforeStart(const absl::Status& s) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!closed_) {
        closed_ = true;
        FailLocked(s);
      }
    }
    api_->CountRequest("http_completions", s);
    api_->Untrack(this);
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
      if (!ex_->Write(SseEvent(Chunk(p->index * n_ + c, d.text, nullptr, nullptr)))) {
        closed_ = true;
        gone = true;
      }
    }
    if (gone) CancelAll();
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
    if (failed) CancelAll();  // one prompt failed: the request fails, stop the others
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
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!closed_) {
        closed_ = true;
        if (!status.ok()) {
          FailLocked(status);
        } else {
          FinishLocked(logprobs);
        }
      }
    }
    api_->CountRequest("http_completions", status);
    api_->Untrack(this);
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
      if (req_.include_usage) {
        json u = ChunkBase();
        u["choices"] = json::array();
        u["usage"] = UsageJson(usage, completion_tokens);
        ex_->Write(SseEvent(DumpJson(u)));
      }
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
    json resp = ChunkBase();
    resp["choices"] = std::move(choices);
    resp["usage"] = UsageJson(usage, completion_tokens);
    RespondJson(ex_, 200, resp, request_id_);
  }

  json ChunkBase() const {
    return {{"id", id_},
            {"object", "text_completion"},
            {"created", created_},
            {"model", model_},
            {"system_fingerprint", SystemFingerprint()}};
  }

  std::string Chunk(size_t index, const std::string& text, const json& logprobs, const json& finish) const {
    json c = ChunkBase();
    c["choices"] =
        json::array({{{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}}});
    return DumpJson(c);
  }

  void StartStreamLocked() {
    if (started_) return;
    started_ = true;
    StartSse(*ex_, request_id_);
  }

  void FailLocked(const absl::Status& status) { FailExchange(ex_, started_, status, request_id_); }

  HttpApi* const api_;
  const std::shared_ptr<HttpExchange> ex_;
  CompletionRequest req_;
  AdmissionLease lease_;
  const std::string request_id_;
  const std::string id_;
  const int64_t created_;
  std::vector<PromptSink> prompts_;  // sized once: generations hold pointers into it

  std::mutex mu_;
  std::string model_;
  const size_t n_;  // choices per prompt
  bool started_ = false;
  bool closed_ = false;
  size_t ended_ = 0;
  absl::Status first_error_;

  std::mutex gen_mu_;
  bool cancelled_ = false;
  std::vector<std::shared_ptr<Generation>> generations_;
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
