#include "services/gateway/chat_service.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/gateway/generation.h"

namespace phi::gateway {

absl::StatusOr<GenerateParams> ParamsFromChat(const phi::v1::ChatRequest& req, const ChatmlOptions& chatml) {
  GenerateParams p;
  absl::StatusOr<phi::v1::SegmentList> segs = RenderChatml(req.messages(), chatml);
  if (!segs.ok()) return segs.status();
  *p.prompt.mutable_segments() = std::move(*segs);
  p.request_id = req.request_id();
  p.model = req.model();
  p.sampling = req.sampling();
  p.stopping = req.stopping();
  p.logprobs = req.logprobs() || req.top_logprobs() > 0;
  p.top_logprobs = req.top_logprobs();
  return p;
}

absl::StatusOr<GenerateParams> ParamsFromComplete(const phi::v1::CompleteRequest& req) {
  if (req.prompt().empty()) return absl::InvalidArgumentError("prompt: at least 1 byte is required");
  if (req.prompt().size() > (4u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", req.prompt().size(), " bytes, at most 4 MiB"));
  }
  GenerateParams p;
  p.prompt.set_text(req.prompt());
  p.parse_special = true;
  if (req.echo()) p.echo_text = req.prompt();
  p.request_id = req.request_id();
  p.model = req.model();
  p.sampling = req.sampling();
  p.stopping = req.stopping();
  p.logprobs = req.logprobs() || req.top_logprobs() > 0;
  p.top_logprobs = req.top_logprobs();
  p.prompt_logprobs = req.prompt_logprobs();
  return p;
}

namespace {

Deadline DeadlineOf(grpc::CallbackServerContext* ctx) {
  auto d = ctx->deadline();
  // No deadline shows as a far-future time point.
  if (d > std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) return Deadline::max();
  return d;
}

std::string Authorization(grpc::CallbackServerContext* ctx) {
  auto it = ctx->client_metadata().find("authorization");
  if (it == ctx->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::string CodeName(const absl::Status& s) {
  return std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code()));
}

// The fields every last message carries (unary responses and the last stream message).
template <typename Msg>
void SetFinalFields(const GenerateResult& r, Msg* m) {
  m->set_request_id(r.request_id);
  m->set_finish_reason(r.finish_reason);
  *m->mutable_usage() = r.usage;
  *m->mutable_timings() = r.timings;
  m->set_model(r.model);
  m->set_seed(r.seed);
}

// Moves a delta's logprobs into a message; prompt logprobs only where the message
// type carries them (completions).
template <typename Msg>
void AddLogprobs(GenerateDelta& d, Msg* m) {
  for (auto& l : d.logprobs) *m->add_logprobs() = std::move(l);
  if constexpr (requires { m->add_prompt_logprobs(); }) {
    for (auto& l : d.prompt_logprobs) *m->add_prompt_logprobs() = std::move(l);
  }
}

// What the four generation RPCs share: admission (the lease is held until the generation
// ends), the generation and its cancellation, request metrics, and lifetime: a call is
// deleted once gRPC is done with it (the reactor's OnDone) and its generation has ended
// (OnEnd), whichever comes last.
class GenerationCall : public GenerationSink {
 protected:
  GenerationCall(ChatServiceImpl::Deps deps, const char* route) : deps_(deps), route_(route) {}
  virtual ~GenerationCall() = default;

  // Admits the request and starts its generation; a refused one ends at once through OnEnd.
  void Begin(grpc::CallbackServerContext* ctx, absl::StatusOr<GenerateParams> params) {
    absl::StatusOr<AdmissionLease> lease = deps_.auth->Admit(Authorization(ctx));
    const absl::Status refused = !lease.ok() ? lease.status() : params.status();
    if (!refused.ok()) return OnEnd(refused, GenerateResult{});
    lease_.emplace(std::move(*lease));
    params->deadline = DeadlineOf(ctx);
    if (params->request_id.empty()) params->request_id = deps_.generator->NewRequestId();
    request_id_ = params->request_id;
    std::shared_ptr<Generation> generation = deps_.generator->Start(std::move(*params), this);
    bool cancel = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      generation_ = std::move(generation);
      cancel = cancel_requested_;
    }
    if (cancel) generation_->Cancel();
  }

  // The client is gone (OnCancel, a failed write).
  void CancelGeneration() {
    std::shared_ptr<Generation> generation;
    {
      std::lock_guard<std::mutex> l(mu_);
      cancel_requested_ = true;
      generation = generation_;
    }
    if (generation) generation->Cancel();
  }

  // The generation has ended with `s`: the key's slot back, metrics, the log line.
  void Ended(const absl::Status& s) {
    lease_.reset();
    deps_.metrics->CountRequest(route_, CodeName(s));
    if (!s.ok() && s.code() != absl::StatusCode::kCancelled) {
      PHI_LOG(INFO, "request_failed").Str("route", route_).Str("request_id", request_id_).Str("error", s.ToString());
    }
  }

  // Called once by the reactor's OnDone and once by OnEnd.
  void Release() {
    if (owners_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  const std::string& request_id() const { return request_id_; }

 private:
  ChatServiceImpl::Deps deps_;
  const char* route_;
  std::string request_id_;
  std::optional<AdmissionLease> lease_;
  std::atomic<int> owners_{2};
  std::mutex mu_;
  bool cancel_requested_ = false;
  std::shared_ptr<Generation> generation_;
};

// Chat, Complete: the text and logprobs gathered into the response.
template <typename Resp>
class UnaryCall final : public grpc::ServerUnaryReactor, public GenerationCall {
 public:
  UnaryCall(ChatServiceImpl::Deps deps, const char* route, grpc::CallbackServerContext* ctx,
            absl::StatusOr<GenerateParams> params, Resp* resp)
      : GenerationCall(deps, route), resp_(resp) {
    Begin(ctx, std::move(params));
  }

  void OnDelta(GenerateDelta&& d) override {
    text_ += d.text;
    AddLogprobs(d, resp_);
  }
  void OnEnd(const absl::Status& s, GenerateResult&& r) override {
    Ended(s);
    if (s.ok()) {
      resp_->set_text(std::move(text_));
      SetFinalFields(r, resp_);
    }
    Finish(common::ToGrpcStatus(s));
    Release();
  }
  void OnCancel() override { CancelGeneration(); }
  void OnDone() override { Release(); }

 private:
  Resp* resp_;
  std::string text_;
};

// ChatStream, CompleteStream: one message per delta, then the final message. gRPC takes one
// write at a time; deltas that arrive meanwhile are merged into the next message.
template <typename Msg>
class StreamCall final : public grpc::ServerWriteReactor<Msg>, public GenerationCall {
 public:
  StreamCall(ChatServiceImpl::Deps deps, const char* route, grpc::CallbackServerContext* ctx,
             absl::StatusOr<GenerateParams> params)
      : GenerationCall(deps, route) {
    Begin(ctx, std::move(params));
  }

  void OnDelta(GenerateDelta&& d) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!has_pending_) pending_.set_request_id(request_id());
      has_pending_ = true;
      *pending_.mutable_text_delta() += d.text;
      AddLogprobs(d, &pending_);
    }
    Pump();
  }
  void OnEnd(const absl::Status& s, GenerateResult&& r) override {
    Ended(s);
    {
      std::lock_guard<std::mutex> l(mu_);
      end_status_ = s;
      result_ = std::move(r);
      ended_ = true;
    }
    Pump();
    Release();
  }
  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      writing_ = false;
      if (!ok) client_gone_ = true;
    }
    if (!ok) CancelGeneration();
    Pump();
  }
  void OnCancel() override { CancelGeneration(); }
  void OnDone() override { Release(); }

 private:
  // Starts the next write, or the end of the call, when nothing is being written. gRPC is
  // called outside the lock: it may run OnWriteDone on this thread.
  void Pump() {
    enum class Next { kWrite, kWriteLast, kFinish } next;
    grpc::Status status;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (writing_ || finishing_) return;
      if (has_pending_ && !client_gone_) {
        out_.Clear();
        out_.Swap(&pending_);
        has_pending_ = false;
        writing_ = true;
        next = Next::kWrite;
      } else if (ended_) {
        finishing_ = true;
        if (end_status_.ok() && !client_gone_) {
          out_.Clear();
          SetFinalFields(result_, &out_);
          next = Next::kWriteLast;
        } else {
          status = client_gone_ ? grpc::Status(grpc::StatusCode::CANCELLED, "the client went away")
                                : common::ToGrpcStatus(end_status_);
          next = Next::kFinish;
        }
      } else {
        return;
      }
    }
    switch (next) {
      case Next::kWrite:
        this->StartWrite(&out_);
        break;
      case Next::kWriteLast:
        this->StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
        break;
      case Next::kFinish:
        this->Finish(status);
        break;
    }
  }

  std::mutex mu_;
  Msg pending_, out_;
  bool has_pending_ = false;
  bool writing_ = false;
  bool client_gone_ = false;
  bool ended_ = false;
  bool finishing_ = false;
  absl::Status end_status_;
  GenerateResult result_;
};

}  // namespace

grpc::ServerUnaryReactor* ChatServiceImpl::Chat(grpc::CallbackServerContext* ctx, const phi::v1::ChatRequest* req,
                                                phi::v1::ChatResponse* resp) {
  return new UnaryCall<phi::v1::ChatResponse>(deps(), "chat", ctx, ParamsFromChat(*req, chatml_), resp);
}

grpc::ServerWriteReactor<phi::v1::ChatStreamResponse>* ChatServiceImpl::ChatStream(
    grpc::CallbackServerContext* ctx, const phi::v1::ChatRequest* req) {
  return new StreamCall<phi::v1::ChatStreamResponse>(deps(), "chat_stream", ctx, ParamsFromChat(*req, chatml_));
}

grpc::ServerUnaryReactor* ChatServiceImpl::Complete(grpc::CallbackServerContext* ctx,
                                                    const phi::v1::CompleteRequest* req,
                                                    phi::v1::CompleteResponse* resp) {
  return new UnaryCall<phi::v1::CompleteResponse>(deps(), "complete", ctx, ParamsFromComplete(*req), resp);
}

grpc::ServerWriteReactor<phi::v1::CompleteStreamResponse>* ChatServiceImpl::CompleteStream(
    grpc::CallbackServerContext* ctx, const phi::v1::CompleteRequest* req) {
  return new StreamCall<phi::v1::CompleteStreamResponse>(deps(), "complete_stream", ctx, ParamsFromComplete(*req));
}

grpc::ServerUnaryReactor* ChatServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                      const phi::v1::ListModelsRequest*,
                                                      phi::v1::ListModelsResponse* resp) {
  absl::Status s = auth_->Check(Authorization(ctx));
  if (s.ok()) {
    for (const auto& m : generator_->pool()->Models()) {
      auto* info = resp->add_models();
      info->set_name(m.name);
      info->set_max_context_tokens(m.max_context_tokens);
      info->set_ready_worker_groups(m.ready_groups);
    }
  }
  metrics_->CountRequest("list_models", CodeName(s));
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(common::ToGrpcStatus(s));
  return reactor;
}

}  // namespace phi::gateway
