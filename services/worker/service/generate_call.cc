#include "services/worker/service/generate_call.h"

#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/worker/service/proto_convert.h"

namespace phi::worker {
namespace {

class RefusedCall final : public GenerateReactor {
 public:
  explicit RefusedCall(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

GenerateReactor* RefuseGenerate(grpc::Status status) { return new RefusedCall(std::move(status)); }

GenerateReactor* GenerateCall::Start(std::shared_ptr<RequestStream> stream, const StreamWritePool& pool) {
  auto call = std::make_shared<GenerateCall>(std::move(stream));
  call->self_ = call;
  // Calls the notifier at once when the engine has already pushed (a pool thread may then
  // start the first write before gRPC has bound this reactor: gRPC keeps it until then).
  call->stream_->set_output_notifier(pool.Notifier(call));
  return call.get();
}

std::shared_ptr<GenerateCall> GenerateCall::StartPending() {
  auto call = std::make_shared<GenerateCall>(nullptr);
  call->self_ = call;
  return call;
}

void GenerateCall::Attach(const std::shared_ptr<GenerateCall>& call, std::shared_ptr<RequestStream> stream,
                          const StreamWritePool& pool) {
  bool gone;
  {
    std::lock_guard<std::mutex> lock(call->mu_);
    call->stream_ = stream;
    gone = call->client_gone_;
  }
  if (gone) stream->Cancel();  // its final chunk still comes, and then the call finishes
  stream->set_output_notifier(pool.Notifier(call));
}

void GenerateCall::Refuse(grpc::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    finishing_ = true;
  }
  Finish(std::move(status));
}

bool GenerateCall::client_gone() {
  std::lock_guard<std::mutex> lock(mu_);
  return client_gone_;
}

void GenerateCall::Pump() {
  enum class Next { kWrite, kWriteLast, kFinish } next = Next::kFinish;
  grpc::Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (writing_ || finishing_ || stream_ == nullptr) return;
    OutputChunk chunk;
    while (true) {
      if (!stream_->TryNext(&chunk)) return;  // armed: the next push queues us again
      if (client_gone_) {
        if (!chunk.finished) continue;  // wait for the engine to let go of the request
        status = grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled or its deadline passed");
        next = Next::kFinish;
      } else if (chunk.finished && chunk.finish_reason == FinishReason::kError) {
        PHI_LOG(WARNING, "generate_failed")
            .Str("request_id", stream_->request_id())
            .Str("error", chunk.status.ToString());
        status = common::ToGrpcStatus(chunk.status.ok() ? absl::InternalError("generation failed") : chunk.status);
        next = Next::kFinish;
        if (!chunk.token_ids.empty()) {  // the tokens made before the error, then the error status
          chunk.finished = false;
          out_.Clear();
          ToProto(chunk, stream_->request_id(), &out_);
          next = Next::kWriteLast;
        }
      } else {
        out_.Clear();
        ToProto(chunk, stream_->request_id(), &out_);
        next = chunk.finished ? Next::kWriteLast : Next::kWrite;
      }
      break;
    }
    if (next == Next::kWrite) {
      writing_ = true;
    } else {
      finishing_ = true;
    }
  }
  switch (next) {
    case Next::kWrite:
      StartWrite(&out_);
      break;
    case Next::kWriteLast:  // OnWriteDone does not follow; OnDone does
      StartWriteAndFinish(&out_, grpc::WriteOptions(), status);
      break;
    case Next::kFinish:
      Finish(status);
      break;
  }
}

void GenerateCall::OnWriteDone(bool ok) {
  std::shared_ptr<RequestStream> cancel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok && !client_gone_) {  // the stream broke under us
      client_gone_ = true;
      cancel = stream_;
    }
  }
  if (cancel != nullptr) cancel->Cancel();
  Pump();
}

void GenerateCall::OnCancel() {
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    client_gone_ = true;  // cancelled or past its deadline: leave the batch at the next step
    stream = stream_;
  }
  if (stream == nullptr) return;  // pending: Attach cancels the stream, or Refuse ends the call
  stream->Cancel();  // idempotent; the engine's final chunk queues us through the notifier
  Pump();
}

void GenerateCall::OnDone() {
  // Deleted here unless a pool thread still holds it (it then lets go right after).
  std::shared_ptr<GenerateCall> last = std::move(self_);
}

}  // namespace phi::worker
