#include "services/gateway/chat_service.h"

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"

namespace phi::gateway {

namespace {

Deadline DeadlineOf(grpc::ServerContext* ctx) {
  auto d = ctx->deadline();
  // No deadline shows as a far-future time point.
  if (d > std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) return Deadline::max();
  return d;
}

std::string Authorization(grpc::ServerContext* ctx) {
  auto it = ctx->client_metadata().find("authorization");
  if (it == ctx->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

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

absl::Status ChatServiceImpl::Serve(grpc::ServerContext* ctx, const std::string& route,
                                    absl::StatusOr<GenerateParams> params,
                                    const std::function<bool(GenerateDelta&&)>& on_delta, GenerateResult* result) {
  absl::Status status;
  absl::StatusOr<AdmissionLease> lease = auth_->Admit(Authorization(ctx));
  if (!lease.ok()) {
    status = lease.status();
  } else if (!params.ok()) {
    status = params.status();
  } else {
    params->deadline = DeadlineOf(ctx);
    Cancellation cancel;
    auto guard = watcher_.Watch([ctx] { return ctx->IsCancelled(); }, &cancel);
    status = generator_->Run(*params, &cancel, on_delta, result);
  }
  metrics_->CountRequest(route, std::string(common::GrpcCodeName(common::ToGrpcStatus(status).error_code())));
  if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
    PHI_LOG(INFO, "request_failed").Str("route", route).Str("request_id", result->request_id).Str("error",
                                                                                                   status.ToString());
  }
  return status;
}

namespace {

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

}  // namespace

namespace {

// Moves a delta's logprobs into a message; prompt logprobs only where the message
// type carries them (completions).
template <typename Msg>
void AddLogprobs(GenerateDelta& d, Msg* m) {
  for (auto& l : d.logprobs) *m->add_logprobs() = std::move(l);
  if constexpr (requires { m->add_prompt_logprobs(); }) {
    for (auto& l : d.prompt_logprobs) *m->add_prompt_logprobs() = std::move(l);
  }
}

// Unary RPCs: gather the text and logprobs into the response.
template <typename Resp>
std::function<bool(GenerateDelta&&)> CollectInto(Resp* resp, std::string* text) {
  return [resp, text](GenerateDelta&& d) {
    *text += d.text;
    AddLogprobs(d, resp);
    return true;
  };
}

// Streaming RPCs: one message per delta; false (stop) when the client is gone.
template <typename Msg>
std::function<bool(GenerateDelta&&)> WriteTo(grpc::ServerWriter<Msg>* writer, const GenerateResult* r) {
  return [writer, r](GenerateDelta&& d) {
    Msg m;
    m.set_request_id(r->request_id);
    m.set_text_delta(std::move(d.text));
    AddLogprobs(d, &m);
    return writer->Write(m);
  };
}

template <typename Resp>
grpc::Status FinishUnary(const absl::Status& s, const GenerateResult& r, std::string text, Resp* resp) {
  if (!s.ok()) return common::ToGrpcStatus(s);
  resp->set_text(std::move(text));
  SetFinalFields(r, resp);
  return grpc::Status::OK;
}

template <typename Msg>
grpc::Status FinishStream(const absl::Status& s, const GenerateResult& r, grpc::ServerWriter<Msg>* writer) {
  if (!s.ok()) return common::ToGrpcStatus(s);
  Msg last;
  SetFinalFields(r, &last);
  writer->Write(last);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ChatServiceImpl::Chat(grpc::ServerContext* ctx, const phi::v1::ChatRequest* req,
                                   phi::v1::ChatResponse* resp) {
  GenerateResult r;
  std::string text;
  const absl::Status s = Serve(ctx, "chat", ParamsFromChat(*req, chatml_), CollectInto(resp, &text), &r);
  return FinishUnary(s, r, std::move(text), resp);
}

grpc::Status ChatServiceImpl::ChatStream(grpc::ServerContext* ctx, const phi::v1::ChatRequest* req,
                                         grpc::ServerWriter<phi::v1::ChatStreamResponse>* writer) {
  GenerateResult r;
  const absl::Status s = Serve(ctx, "chat_stream", ParamsFromChat(*req, chatml_), WriteTo(writer, &r), &r);
  return FinishStream(s, r, writer);
}

grpc::Status ChatServiceImpl::Complete(grpc::ServerContext* ctx, const phi::v1::CompleteRequest* req,
                                       phi::v1::CompleteResponse* resp) {
  GenerateResult r;
  std::string text;
  const absl::Status s = Serve(ctx, "complete", ParamsFromComplete(*req), CollectInto(resp, &text), &r);
  return FinishUnary(s, r, std::move(text), resp);
}

grpc::Status ChatServiceImpl::CompleteStream(grpc::ServerContext* ctx, const phi::v1::CompleteRequest* req,
                                             grpc::ServerWriter<phi::v1::CompleteStreamResponse>* writer) {
  GenerateResult r;
  const absl::Status s = Serve(ctx, "complete_stream", ParamsFromComplete(*req), WriteTo(writer, &r), &r);
  return FinishStream(s, r, writer);
}

grpc::Status ChatServiceImpl::ListModels(grpc::ServerContext* ctx, const phi::v1::ListModelsRequest*,
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
  metrics_->CountRequest("list_models", std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code())));
  return common::ToGrpcStatus(s);
}

}  // namespace phi::gateway
