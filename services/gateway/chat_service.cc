#include "services/gateway/chat_service.h"

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>


#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/gateway/generation.h"
#include "services/gateway/lora_request.h"
#include "services/gateway/request_params.h"

namespace phi::gateway {


absl::Status ParseRequest(const grpc::ByteBuffer& raw, google::protobuf::Message* msg) {
  std::vector<grpc::Slice> slices;
  if (!raw.Dump(&slices).ok()) return absl::InvalidArgumentError("request: unreadable message");
  if (slices.size() == 1) return ParseRequestBytes(slices[0].begin(), slices[0].size(), msg);
  std::string joined;
  for (const grpc::Slice& sl : slices) joined.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  return ParseRequestBytes(reinterpret_cast<const uint8_t*>(joined.data()), joined.size(), msg);
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
    if (params->request_id.empty()) params->request_id = deps_.generations->NewRequestId();
    request_id_ = params->request_id;
    std::shared_ptr<Generation> generation = deps_.generations->Start(std::move(*params), this);
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

  // The generation has ended with `s` (on `model`, the served name it resolved to; "" when it
  // named none): the key's slot back, metrics, the log line.
  void Ended(const absl::Status& s, const std::string& model) {
    lease_.reset();
    deps_.metrics->CountRequest(route_, CodeName(s), model);
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

// Chat, Complete: each choice's text and logprobs gathered; choice 0 in the top-level fields,
// and with n > 1 every choice in `choices`.
template <typename Resp>
class UnaryCall final : public grpc::ServerUnaryReactor, public GenerationCall {
 public:
  UnaryCall(ChatServiceImpl::Deps deps, const char* route, grpc::CallbackServerContext* ctx,
            absl::StatusOr<GenerateParams> params, grpc::ByteBuffer* out)
      : GenerationCall(deps, route), out_(out) {
    Begin(ctx, std::move(params));
  }

  void OnDelta(GenerateDelta&& d) override {
    if (d.index < 0) return;
    if (static_cast<size_t>(d.index) >= choices_.size()) choices_.resize(d.index + 1);
    phi::v1::Choice& c = choices_[d.index];
    c.mutable_text()->append(d.text);
    for (auto& l : d.logprobs) *c.add_logprobs() = std::move(l);
    d.logprobs.clear();
    AddLogprobs(d, &resp_);  // the prompt's
  }
  void OnEnd(const absl::Status& s, GenerateResult&& r) override {
    Ended(s, r.model);
    grpc::Status status = common::ToGrpcStatus(s);
    if (s.ok()) {
      choices_.resize(std::max<size_t>(r.choices.size(), 1));
      for (size_t i = 0; i < r.choices.size(); ++i) {
        choices_[i].set_index(static_cast<int32_t>(i));
        choices_[i].set_finish_reason(r.choices[i].finish_reason);
        choices_[i].set_seed(r.choices[i].seed);
      }
      if (choices_.size() == 1) {
        resp_.set_text(std::move(*choices_[0].mutable_text()));
        resp_.mutable_logprobs()->Swap(choices_[0].mutable_logprobs());
      } else {
        resp_.set_text(choices_[0].text());
        *resp_.mutable_logprobs() = choices_[0].logprobs();
        for (auto& c : choices_) *resp_.add_choices() = std::move(c);
      }
      SetFinalFields(r, &resp_);
      bool own = false;
      out_->Clear();
      status = grpc::SerializationTraits<Resp>::Serialize(resp_, out_, &own);
    }
    Finish(status);
    Release();
  }
  void OnCancel() override { CancelGeneration(); }
  void OnDone() override { Release(); }

 private:
  grpc::ByteBuffer* out_;
  Resp resp_;
  std::vector<phi::v1::Choice> choices_;  // by index
};

// ChatStream, CompleteStream: one message per delta, then the final messages. gRPC takes one
// write at a time; deltas that arrive meanwhile are merged into the next message (those of
// one choice: a message has one index). At the end each choice but the last gets a message
// with its finish_reason and seed, and the last one's carries the request's usage too.
template <typename Msg>
class StreamCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer>, public GenerationCall {
 public:
  StreamCall(ChatServiceImpl::Deps deps, const char* route, grpc::CallbackServerContext* ctx,
             absl::StatusOr<GenerateParams> params)
      : GenerationCall(deps, route) {
    Begin(ctx, std::move(params));
  }

  void OnDelta(GenerateDelta&& d) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (pending_.empty() || pending_.back().index() != d.index) {
        pending_.emplace_back();
        pending_.back().set_request_id(request_id());
        pending_.back().set_index(d.index);
      }
      *pending_.back().mutable_text_delta() += d.text;
      AddLogprobs(d, &pending_.back());
    }
    Pump();
  }
  void OnEnd(const absl::Status& s, GenerateResult&& r) override {
    Ended(s, r.model);
    {
      std::lock_guard<std::mutex> l(mu_);
      end_status_ = s;
      if (s.ok()) {
        for (size_t i = 0; i + 1 < r.choices.size(); ++i) {
          Msg& m = pending_.emplace_back();
          m.set_request_id(r.request_id);
          m.set_index(static_cast<int32_t>(i));
          m.set_finish_reason(r.choices[i].finish_reason);
          m.set_seed(r.choices[i].seed);
        }
        if (!r.choices.empty()) {
          last_index_ = static_cast<int32_t>(r.choices.size()) - 1;
          r.finish_reason = r.choices.back().finish_reason;
          r.seed = r.choices.back().seed;
        }
      }
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
      if (!pending_.empty() && !client_gone_) {
        out_ = std::move(pending_.front());
        pending_.pop_front();
        writing_ = true;
        next = Next::kWrite;
      } else if (ended_) {
        finishing_ = true;
        if (end_status_.ok() && !client_gone_) {
          out_.Clear();
          out_.set_index(last_index_);
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
    if (next != Next::kFinish) {
      // out_ is this call's alone until the write completes.
      bool own = false;
      out_bytes_.Clear();
      status = grpc::SerializationTraits<Msg>::Serialize(out_, &out_bytes_, &own);
      if (!status.ok()) next = Next::kFinish;
    }
    switch (next) {
      case Next::kWrite:
        this->StartWrite(&out_bytes_);
        break;
      case Next::kWriteLast:
        this->StartWriteAndFinish(&out_bytes_, grpc::WriteOptions(), grpc::Status::OK);
        break;
      case Next::kFinish:
        this->Finish(status);
        break;
    }
  }

  std::mutex mu_;
  std::deque<Msg> pending_;
  Msg out_;
  grpc::ByteBuffer out_bytes_;
  bool writing_ = false;
  bool client_gone_ = false;
  bool ended_ = false;
  bool finishing_ = false;
  int32_t last_index_ = 0;
  absl::Status end_status_;
  GenerateResult result_;
};

}  // namespace

namespace {

template <typename Req>
absl::StatusOr<Req> Parse(const grpc::ByteBuffer* raw) {
  Req req;
  if (absl::Status s = ParseRequest(*raw, &req); !s.ok()) return s;
  return req;
}

absl::StatusOr<GenerateParams> ChatParams(const grpc::ByteBuffer* raw, const ChatmlOptions& chatml, bool stream) {
  absl::StatusOr<phi::v1::ChatRequest> req = Parse<phi::v1::ChatRequest>(raw);
  if (!req.ok()) return req.status();
  absl::StatusOr<GenerateParams> p = ParamsFromChat(*req, chatml);
  if (p.ok()) p->stream = stream;
  return p;
}

absl::StatusOr<GenerateParams> CompleteParams(const grpc::ByteBuffer* raw, bool stream) {
  absl::StatusOr<phi::v1::CompleteRequest> req = Parse<phi::v1::CompleteRequest>(raw);
  if (!req.ok()) return req.status();
  absl::StatusOr<GenerateParams> p = ParamsFromComplete(*req);
  if (p.ok()) p->stream = stream;
  return p;
}

}  // namespace

grpc::ServerUnaryReactor* ChatServiceImpl::Chat(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                grpc::ByteBuffer* resp) {
  return new UnaryCall<phi::v1::ChatResponse>(deps(), "chat", ctx, ChatParams(req, chatml_, /*stream=*/false), resp);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ChatServiceImpl::ChatStream(grpc::CallbackServerContext* ctx,
                                                                        const grpc::ByteBuffer* req) {
  return new StreamCall<phi::v1::ChatStreamResponse>(deps(), "chat_stream", ctx,
                                                     ChatParams(req, chatml_, /*stream=*/true));
}

grpc::ServerUnaryReactor* ChatServiceImpl::Complete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                    grpc::ByteBuffer* resp) {
  return new UnaryCall<phi::v1::CompleteResponse>(deps(), "complete", ctx, CompleteParams(req, /*stream=*/false), resp);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ChatServiceImpl::CompleteStream(grpc::CallbackServerContext* ctx,
                                                                            const grpc::ByteBuffer* req) {
  return new StreamCall<phi::v1::CompleteStreamResponse>(deps(), "complete_stream", ctx,
                                                         CompleteParams(req, /*stream=*/true));
}

grpc::ServerUnaryReactor* ChatServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                      const phi::v1::ListModelsRequest*,
                                                      phi::v1::ListModelsResponse* resp) {
  absl::Status s = auth_->Check(Authorization(ctx));
  if (s.ok()) {
    for (const auto& m : generations_->pool()->Models()) {
      auto* info = resp->add_models();
      info->set_name(m.name);
      info->set_max_context_tokens(m.max_context_tokens);
      info->set_ready_worker_groups(m.ready_groups);
      info->set_parent(m.parent);
    }
  }
  metrics_->CountRequest("list_models", CodeName(s));
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(common::ToGrpcStatus(s));
  return reactor;
}

namespace {

// Finishes an adapter call with `s` or the serialized `msg`, counted on `route` (the model label
// only once the adapter is served).
void FinishAdmin(grpc::ServerUnaryReactor* reactor, GatewayMetrics* metrics, const char* route, const absl::Status& s,
                 const google::protobuf::Message& msg, grpc::ByteBuffer* out, const std::string& model) {
  grpc::Status status = common::ToGrpcStatus(s);
  if (s.ok()) {
    bool own = false;
    out->Clear();
    status = grpc::SerializationTraits<google::protobuf::Message>::Serialize(msg, out, &own);
  }
  metrics->CountRequest(route, std::string(common::GrpcCodeName(status.error_code())), s.ok() ? model : "");
  if (!s.ok()) PHI_LOG(INFO, "request_failed").Str("route", route).Str("error", s.ToString());
  reactor->Finish(status);
}

}  // namespace

grpc::ServerUnaryReactor* ChatServiceImpl::LoadLoraAdapter(grpc::CallbackServerContext* ctx,
                                                           const grpc::ByteBuffer* raw, grpc::ByteBuffer* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  phi::v1::LoadLoraAdapterRequest req;
  absl::Status s = auth_->Check(Authorization(ctx));
  if (s.ok()) s = ParseRequest(*raw, &req);
  if (s.ok()) s = ValidateLoraName(req.lora_name());
  if (s.ok()) s = ValidateLoraPath(req.lora_path());
  if (!s.ok()) {
    FinishAdmin(reactor, metrics_, "load_lora_adapter", s, phi::v1::LoadLoraAdapterResponse(), resp, "");
    return reactor;
  }
  GatewayMetrics* metrics = metrics_;
  generations_->lora()->Load(
      req.lora_name(), req.lora_path(), [reactor, resp, metrics](absl::StatusOr<ModelSummary> m) {
        phi::v1::LoadLoraAdapterResponse out;
        if (m.ok()) {
          phi::v1::ModelInfo* info = out.mutable_model();
          info->set_name(m->name);
          info->set_max_context_tokens(m->max_context_tokens);
          info->set_ready_worker_groups(m->ready_groups);
          info->set_parent(m->parent);
        }
        FinishAdmin(reactor, metrics, "load_lora_adapter", m.status(), out, resp, m.ok() ? m->name : "");
      });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::UnloadLoraAdapter(grpc::CallbackServerContext* ctx,
                                                             const grpc::ByteBuffer* raw, grpc::ByteBuffer* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  phi::v1::UnloadLoraAdapterRequest req;
  absl::Status s = auth_->Check(Authorization(ctx));
  if (s.ok()) s = ParseRequest(*raw, &req);
  if (s.ok()) s = ValidateLoraName(req.lora_name());
  if (!s.ok()) {
    FinishAdmin(reactor, metrics_, "unload_lora_adapter", s, phi::v1::UnloadLoraAdapterResponse(), resp, "");
    return reactor;
  }
  GatewayMetrics* metrics = metrics_;
  generations_->lora()->Unload(req.lora_name(), [reactor, resp, metrics](absl::Status st) {
    // No model label: the adapter is no longer served.
    FinishAdmin(reactor, metrics, "unload_lora_adapter", st, phi::v1::UnloadLoraAdapterResponse(), resp, "");
  });
  return reactor;
}

}  // namespace phi::gateway
