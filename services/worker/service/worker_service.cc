#include "services/worker/service/worker_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/common/status_macros.h"
#include "services/worker/service/generate_call.h"
#include "services/worker/service/proto_convert.h"

namespace phi::worker {

WorkerServiceImpl::WorkerServiceImpl(std::string model_name, int32_t world_size, metrics::Registry* registry,
                                     int write_threads)
    : model_name_(std::move(model_name)),
      world_size_(world_size),
      ready_gauge_(registry
                       ->AddGauge("phi_worker_ready",
                                  "1 once the model is loaded and a forward pass succeeded, 0 otherwise.")
                       .Get()),
      write_pool_(write_threads) {
  ready_gauge_.Set(0);
}

void WorkerServiceImpl::SetReady(bool ready) {
  ready_.store(ready);
  ready_gauge_.Set(ready ? 1 : 0);
}

absl::Status WorkerServiceImpl::CompileConstraint(const ConstraintSpec& spec, GenerationRequest* r) {
  ConstraintCompiler* compiler = compiler_.load();
  if (compiler == nullptr) {
    return absl::FailedPreconditionError(
        "sampling.constraint: this worker has no grammar compiler (its model folder's tokenizer.json could not "
        "be read; see its start-up log)");
  }
  PHI_ASSIGN_OR_RETURN(r->constraint, compiler->NewConstraint(spec));
  return absl::OkStatus();
}

grpc::ServerWriteReactor<phi::v1::GenerateResponse>* WorkerServiceImpl::Generate(
    grpc::CallbackServerContext*, const phi::v1::GenerateRequest* request) {
  Engine* engine = engine_.load();
  if (engine == nullptr || !ready_.load()) {
    return RefuseGenerate(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker is not ready (loading the model or draining)"));
  }
  if (absl::Status st = CheckAdapterName(request->adapter(), "adapter", /*may_be_empty=*/true); !st.ok()) {
    return RefuseGenerate(common::ToGrpcStatus(st));
  }
  GenerationRequest r = FromProto(*request, defaults_);
  ConstraintSpec spec = ConstraintFromProto(request->sampling());
  if (spec.active()) return StartConstrained(engine, std::move(r), std::move(spec));
  absl::StatusOr<std::shared_ptr<RequestStream>> submitted = engine->Submit(std::move(r));
  if (!submitted.ok()) return RefuseGenerate(common::ToGrpcStatus(submitted.status()));
  return GenerateCall::Start(std::move(*submitted), write_pool_);
}

GenerateReactor* WorkerServiceImpl::StartConstrained(Engine* engine, GenerationRequest r, ConstraintSpec spec) {
  std::shared_ptr<GenerateCall> call = GenerateCall::StartPending();
  auto prepare = [this, engine, call, r = std::move(r), spec = std::move(spec)]() mutable {
    if (call->client_gone()) {
      call->Refuse(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled or its deadline passed"));
      return;
    }
    absl::Status st = CompileConstraint(spec, &r);
    if (st.ok()) {
      absl::StatusOr<std::shared_ptr<RequestStream>> submitted = engine->Submit(std::move(r));
      if (submitted.ok()) {
        GenerateCall::Attach(call, std::move(*submitted), write_pool_);
        return;
      }
      st = submitted.status();
    }
    call->Refuse(common::ToGrpcStatus(st));
  };
  if (!preparer_.Run(std::move(prepare))) {
    call->Refuse(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              absl::StrCat("sampling.constraint: ", kMaxPreparingCalls,
                                           " constrained requests are already compiling; retry later")));
  }
  return call.get();
}

grpc::ServerUnaryReactor* WorkerServiceImpl::GetStatus(grpc::CallbackServerContext* context,
                                                       const phi::v1::GetStatusRequest*,
                                                       phi::v1::GetStatusResponse* response) {
  response->set_ready(ready_.load());
  response->set_model(model_name_);
  response->set_world_size(world_size_);
  if (Engine* engine = engine_.load(); engine != nullptr) {
    ToProto(engine->Status(4096), response);
    response->set_max_context_tokens(engine->shape().max_position_embeddings);
    response->set_vocab_size(engine->shape().vocab_size);
    ToProto(defaults_, response->mutable_generation_defaults());
    for (const AdapterInfo& a : engine->Adapters()) ToProto(a, response->add_adapters());
  }
  response->set_max_adapter_slots(max_adapter_slots_.load());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Cancel(grpc::CallbackServerContext* context,
                                                    const phi::v1::CancelRequest* request, phi::v1::CancelResponse*) {
  Engine* engine = engine_.load();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (engine == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("request_id: no request '",
                                                                          request->request_id(),
                                                                          "' (worker not ready)")));
  } else {
    reactor->Finish(common::ToGrpcStatus(engine->Cancel(request->request_id())));
  }
  return reactor;
}

absl::Status WorkerServiceImpl::CheckLoadAdapter(const std::string& name, const std::string& path) const {
  PHI_RETURN_IF_ERROR(CheckAdapterName(name, "name", /*may_be_empty=*/false));
  if (name == model_name_) {
    return absl::InvalidArgumentError(absl::StrCat("name: '", name, "' is the base model's name"));
  }
  if (path.empty()) return absl::InvalidArgumentError("path: required (the adapter's folder)");
  if (path.size() > kMaxAdapterPathBytes) {
    return absl::InvalidArgumentError(absl::StrCat("path: ", path.size(), " bytes, at most ", kMaxAdapterPathBytes));
  }
  if (max_adapter_slots_.load() == 0 || !adapter_loader_) {
    return absl::FailedPreconditionError(
        "this worker serves no LoRA adapters (started with --max-loras 0, or its backend has no adapter slots)");
  }
  if (Engine* engine = engine_.load(); engine != nullptr) {
    for (const AdapterInfo& a : engine->Adapters()) {
      if (a.name == name) return absl::AlreadyExistsError(absl::StrCat("name: adapter '", name, "' is loaded already"));
    }
  }
  return absl::OkStatus();
}

absl::Status RunOneTokenRequest(Engine& engine, const std::string& adapter) {
  GenerationRequest r;
  r.request_id = adapter.empty() ? "warmup" : "warmup-" + adapter;
  r.prompt = {0};
  r.adapter = adapter;
  r.stopping.max_new_tokens = 1;
  PHI_ASSIGN_OR_RETURN(std::shared_ptr<RequestStream> stream, engine.Submit(r));
  OutputChunk chunk;
  const absl::Time deadline = absl::Now() + absl::Minutes(10);
  while (absl::Now() < deadline) {
    if (!stream->Next(&chunk, absl::Milliseconds(100))) continue;
    if (!chunk.finished) continue;
    if (chunk.finish_reason == FinishReason::kError) return chunk.status;
    return absl::OkStatus();
  }
  stream->Cancel();
  return absl::DeadlineExceededError("a one-token request took more than 10 minutes");
}

absl::StatusOr<AdapterInfo> WorkerServiceImpl::LoadAndAddAdapter(Engine* engine, const std::string& name,
                                                                 const std::string& path, bool probe) {
  const absl::Time t0 = absl::Now();
  PHI_ASSIGN_OR_RETURN(std::shared_ptr<const lora::LoraAdapter> adapter, adapter_loader_(name, path));
  PHI_RETURN_IF_ERROR(engine->AddAdapter(adapter));
  if (probe) {
    absl::Status st = RunOneTokenRequest(*engine, name);
    if (!st.ok() && !absl::IsResourceExhausted(st)) {
      engine->RemoveAdapter(name).IgnoreError();
      return st;
    }
  }
  AdapterInfo info{.name = name, .path = path};
  for (AdapterInfo& a : engine->Adapters()) {
    if (a.name == name) info = std::move(a);
  }
  PHI_LOG(INFO, "lora_adapter_loaded")
      .Str("name", name)
      .Str("path", path)
      .Int("rank", info.rank)
      .Num("seconds", absl::ToDoubleSeconds(absl::Now() - t0));
  return info;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::LoadAdapter(grpc::CallbackServerContext* context,
                                                         const phi::v1::LoadAdapterRequest* request,
                                                         phi::v1::LoadAdapterResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Engine* engine = engine_.load();
  if (engine == nullptr || !ready_.load()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker is not ready (loading the model or draining)"));
    return reactor;
  }
  if (absl::Status st = CheckLoadAdapter(request->name(), request->path()); !st.ok()) {
    reactor->Finish(common::ToGrpcStatus(st));
    return reactor;
  }
  // The request and response live until Finish.
  auto load = [this, engine, reactor, request, response] {
    // In a group the other ranks read the folder only when the adapter is installed: probe
    // now, so that a rank that cannot read it fails this call rather than a later request.
    absl::StatusOr<AdapterInfo> info =
        LoadAndAddAdapter(engine, request->name(), request->path(), /*probe=*/world_size_ > 1);
    if (!info.ok()) {
      PHI_LOG(WARNING, "lora_adapter_refused")
          .Str("name", request->name())
          .Str("path", request->path())
          .Str("error", info.status().ToString());
      reactor->Finish(common::ToGrpcStatus(info.status()));
      return;
    }
    ToProto(*info, response->mutable_adapter());
    reactor->Finish(grpc::Status::OK);
  };
  if (!adapter_loads_.Run(std::move(load))) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 absl::StrCat(kMaxLoadingAdapters, " adapters are loading already; retry later")));
  }
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::UnloadAdapter(grpc::CallbackServerContext* context,
                                                           const phi::v1::UnloadAdapterRequest* request,
                                                           phi::v1::UnloadAdapterResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Engine* engine = engine_.load();
  if (engine == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("name: no adapter '", request->name(), "' (worker not ready)")));
    return reactor;
  }
  absl::Status st = engine->RemoveAdapter(request->name());
  if (st.ok()) PHI_LOG(INFO, "lora_adapter_unloaded").Str("name", request->name());
  reactor->Finish(common::ToGrpcStatus(st));
  return reactor;
}

}  // namespace phi::worker
