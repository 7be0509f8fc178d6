#include "services/gateway/generation_service.h"

#include "services/gateway/generation.h"
#include "services/gateway/random_id.h"

namespace phi::gateway {

GenerationService::GenerationService(TokenizerClient* tokenizer, WorkerPool* pool, GatewayMetrics* metrics,
                                     GenerationServiceOptions options)
    : tokenizer_(tokenizer), pool_(pool), metrics_(metrics), options_(options), id_prefix_(RandomHex().substr(0, 8)) {
  if (!tokenizer_->local_encode()) blocking_ = std::make_unique<BlockingExecutor>(options_.tokenizer_call_threads);
  lora_ = std::make_unique<LoraAdmin>(pool_);
}

GenerationService::~GenerationService() = default;

void GenerationService::Offload(std::function<void()> task, bool ahead) {
  if (blocking_) {
    blocking_->Post(std::move(task), ahead);
  } else {
    task();  // nothing here blocks (in-process tokenizer)
  }
}

std::shared_ptr<Generation> GenerationService::Start(GenerateParams params, GenerationSink* sink) {
  if (params.request_id.empty()) params.request_id = NewRequestId();
  const bool encode_remotely = params.prompt_ids.empty() && !tokenizer_->local_encode();
  auto generation = std::make_shared<Generation>(this, std::move(params), sink);
  if (encode_remotely) {
    // The Encode RPC blocks: not on the caller's thread, which may be one of gRPC's.
    Offload([generation] { generation->Prepare(); }, /*ahead=*/true);
  } else {
    generation->Prepare();
  }
  return generation;
}

}  // namespace phi::gateway
