#include "services/worker/service/worker_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/worker/service/proto_convert.h"

namespace phi::worker {
namespace {

// How often a stream waiting for tokens checks whether its client went away (the sync API
// has no callback for it). Bounds how long a cancelled request can linger: one step + this.
constexpr absl::Duration kCancelPoll = absl::Milliseconds(10);

}  // namespace

WorkerServiceImpl::WorkerServiceImpl(std::string model_name, int32_t world_size, metrics::Registry* registry)
    : model_name_(std::move(model_name)),
      world_size_(world_size),
      ready_gauge_(registry
                       ->AddGauge("phi_worker_ready",
                                  "1 once the model is loaded and a forward pass succeeded, 0 otherwise.")
                       .Get()) {
  ready_gauge_.Set(0);
}

void WorkerServiceImpl::SetReady(bool ready) {
  ready_.store(ready);
  ready_gauge_.Set(ready ? 1 : 0);
}

grpc::Status WorkerServiceImpl::Generate(grpc::ServerContext* context, const phi::v1::GenerateRequest* request,
                                         grpc::ServerWriter<phi::v1::GenerateResponse>* writer) {
  Engine* engine = engine_.load();
  if (engine == nullptr || !ready_.load()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker is not ready (loading the model or draining)");
  }
  absl::StatusOr<std::shared_ptr<RequestStream>> submitted = engine->Submit(FromProto(*request));
  if (!submitted.ok()) return common::ToGrpcStatus(submitted.status());
  RequestStream& stream = **submitted;

  bool client_gone = false;
  while (true) {
    if (!client_gone && context->IsCancelled()) {
      client_gone = true;  // cancelled or past its deadline: leave the batch at the next step
      stream.Cancel();
    }
    OutputChunk chunk;
    if (!stream.Next(&chunk, kCancelPoll)) continue;
    if (client_gone) {
      if (!chunk.finished) continue;  // wait for the engine to let go of the request
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled or its deadline passed");
    }
    if (chunk.finished && chunk.finish_reason == FinishReason::kError) {
      if (!chunk.token_ids.empty()) {
        OutputChunk partial = chunk;
        partial.finished = false;
        phi::v1::GenerateResponse response;
        ToProto(partial, stream.request_id(), &response);
        writer->Write(response);
      }
      PHI_LOG(WARNING, "generate_failed")
          .Str("request_id", stream.request_id())
          .Str("error", chunk.status.ToString());
      return common::ToGrpcStatus(chunk.status.ok() ? absl::InternalError("generation failed") : chunk.status);
    }
    phi::v1::GenerateResponse response;
    ToProto(chunk, stream.request_id(), &response);
    if (!writer->Write(response)) {
      client_gone = true;  // the stream broke under us
      stream.Cancel();
      if (chunk.finished) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      continue;
    }
    if (chunk.finished) return grpc::Status::OK;
  }
}

grpc::Status WorkerServiceImpl::GetStatus(grpc::ServerContext*, const phi::v1::GetStatusRequest*,
                                          phi::v1::GetStatusResponse* response) {
  response->set_ready(ready_.load());
  response->set_model(model_name_);
  response->set_world_size(world_size_);
  Engine* engine = engine_.load();
  if (engine == nullptr) return grpc::Status::OK;
  ToProto(engine->Status(4096), response);
  response->set_max_context_tokens(engine->shape().max_position_embeddings);
  response->set_vocab_size(engine->shape().vocab_size);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Cancel(grpc::ServerContext*, const phi::v1::CancelRequest* request,
                                       phi::v1::CancelResponse*) {
  Engine* engine = engine_.load();
  if (engine == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("request_id: no request '", request->request_id(), "' (worker not ready)"));
  }
  return common::ToGrpcStatus(engine->Cancel(request->request_id()));
}

}  // namespace phi::worker
