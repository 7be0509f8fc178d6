#include "services/gateway/http_api.h"

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/gateway/generation.h"
#include "services/gateway/web_page.h"

namespace phi::gateway {

using nlohmann::json;

namespace {

constexpr char kJson[] = "application/json";
constexpr char kModelsPrefix[] = "/v1/models/";

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// 128 random bits as hex: ids that do not collide across replicas or restarts.
std::string RandomHex() {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

// The client's X-Request-Id when it is short printable ASCII; otherwise a new one.
std::string RequestIdFor(const HttpRequest& req) {
  std::string_view given = req.Header("X-Request-Id");
  bool ok = !given.empty() && given.size() <= 128;
  for (char c : given) ok = ok && c > 0x20 && c < 0x7f;
  return ok ? std::string(given) : absl::StrCat("req-", RandomHex());
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
  ex->Respond(code, kJson, DumpJson(body), BaseHeaders(request_id));
}

void RespondError(const std::shared_ptr<HttpExchange>& ex, const absl::Status& s, const std::string& request_id) {
  HttpHeaders h = BaseHeaders(request_id);
  const int code = HttpStatusFor(s.code());
  if (code == 429 || code == 503) h.emplace_back("Retry-After", "1");
  ex->Respond(code, kJson, DumpJson(OpenAiError(s)), std::move(h));
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
void Fail(const std::shared_ptr<HttpExchange>& ex, bool started, const absl::Status& status,
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

json TokenBytes(const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); }

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

// A request whose response is still being produced; Drain() cuts those left at the grace's end.
class HttpApi::LiveCall {
 public:
  virtual ~LiveCall() = default;
  // Ends the response now with `status` (an SSE error event when the stream has begun) and
  // cancels the generation(s). True when the response was still open.
  virtual bool Abort(const absl::Status& status) = 0;
};

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

  void FailLocked(const absl::Status& status) { Fail(ex_, started_, status, request_id_); }

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

  void FailLocked(const absl::Status& status) { Fail(ex_, started_, status, request_id_); }

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

void HttpApi::CountRequest(const std::string& route, const absl::Status& s) {
  metrics_->CountRequest(route, std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code())));
}

void HttpApi::Handle(std::shared_ptr<HttpExchange> ex) {
  const HttpRequest& req = ex->request();
  const std::string request_id = RequestIdFor(req);
  const std::string& path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD";
  auto method_not_allowed = [&](const char* allowed) {
    HttpHeaders h = BaseHeaders(request_id);
    h.emplace_back("Allow", allowed);
    ex->Respond(405, kJson,
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
      json model = {{"id", m.name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "phi-serve"},
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

void HttpApi::ChatCompletions(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id) {
  const std::string route = "http_chat_completions";
  absl::StatusOr<AdmissionLease> lease = auth_->Admit(std::string(ex->request().Header("Authorization")));
  if (!lease.ok()) return Refuse(route, ex, lease.status(), request_id);
  absl::StatusOr<ChatCompletionRequest> req = ParseChatCompletionRequest(ex->request().body, chatml_, limits_);
  if (!req.ok()) return Refuse(route, ex, req.status(), request_id);
  auto call = std::make_shared<ChatCall>(this, ex, std::move(*req), std::move(*lease), request_id);
  call->Begin();
}

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
