// The continuous-batching engine: requests enter through a thread-safe queue; one engine
// thread runs steps. Each step the scheduler picks the running set under a token budget
// (decodes first, then prefill chunks, then newly admitted requests), the ModelRunner runs
// once, and every sequence whose prompt is fully in the KV cache samples its next token.
// Requests join and leave between any two steps. Independent of backend and transport.
#ifndef PHI_SERVICES_WORKER_ENGINE_ENGINE_H_
#define PHI_SERVICES_WORKER_ENGINE_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/metrics/registry.h"
#include "services/worker/engine/adapter_slots.h"
#include "services/worker/engine/engine_metrics.h"
#include "services/worker/engine/kv_block_manager.h"
#include "services/worker/engine/mask_filler.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/engine/request.h"
#include "services/worker/engine/scheduler.h"

namespace phi::worker {

struct EngineOptions {
  int32_t num_kv_blocks = 256;
  int32_t block_size = 16;
  // Tokens per step, prefill chunks and decodes together (chunked prefill).
  int32_t max_batch_tokens = 512;
  // Sequences per step; at most max_batch_tokens.
  int32_t max_running = 64;
  // Requests queued (not yet running) before Submit answers RESOURCE_EXHAUSTED.
  int32_t max_waiting = 256;
  bool enable_prefix_cache = true;
  // The model's eos ids (generation_config.json).
  std::vector<int32_t> eos_token_ids;
  // max_new_tokens when a request leaves it 0 (the model card's 256), clamped to the context.
  int32_t default_max_new_tokens = 256;
  // Null: metrics::DefaultRegistry(). Tests pass their own.
  metrics::Registry* registry = nullptr;
  // Called on the engine thread when a forward pass fails (its batch has already ended with
  // INTERNAL). The worker turns NOT_SERVING: a backend fault (e.g. a sticky CUDA error) must
  // take it out of rotation rather than fail every request that reaches it.
  std::function<void(const absl::Status&)> on_step_failure;
  // LoRA adapters registered at once (--max-lora-adapters; AddAdapter beyond it:
  // RESOURCE_EXHAUSTED). Those installed in the runner at once are the runner's
  // max_adapter_slots() (--max-loras).
  int32_t max_adapters = 64;
};

struct EngineStatus {
  int32_t waiting = 0;
  int32_t running = 0;
  int32_t kv_blocks_free = 0;
  int32_t kv_blocks_total = 0;
  int32_t kv_block_size = 0;
  double prefix_cache_hit_rate = 0;
  std::vector<uint64_t> cached_block_hashes;
};

class Engine {
 public:
  // Allocates the runner's KV cache and starts the engine thread. `runner` must outlive it.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(ModelRunner* runner, EngineOptions options);
  ~Engine();  // Shutdown()

  // Validates and queues a request. INVALID_ARGUMENT names the field (prompt_ids,
  // sampling.temperature, sampling.logit_bias[id], stopping.min_new_tokens, ...); RESOURCE_EXHAUSTED when the queue is
  // full, the request could never fit in the KV cache, or every adapter slot is busy (below);
  // NOT_FOUND for an adapter not loaded; UNAVAILABLE after StopAdmitting.
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerationRequest request);

  // LoRA adapters (services/worker/lora), thread-safe. A request names one in
  // GenerationRequest::adapter (Submit: NOT_FOUND, listing the loaded names, when none has
  // that name). Slots are assigned in Submit, on the caller's thread: the request takes a
  // reference on the slot of its adapter, or gets one (a free slot, else the least recently
  // used slot that no request holds, whose adapter is evicted); when every slot is held by
  // other adapters' waiting or running requests, Submit answers RESOURCE_EXHAUSTED naming the
  // slot count (--max-loras). The reference lasts until the request ends (finish, cancel,
  // error; a preempted request keeps it). The engine thread installs the adapter
  // (ModelRunner::SetAdapter) before the request's first step; when that fails, the request
  // ends with SetAdapter's status code in its final chunk and the slot is left empty.
  // A request's prefix-cache chain starts at common::PrefixHashRoot(adapter): no KV block is
  // shared between adapters, or between an adapter and the base model.
  // AddAdapter: INVALID_ARGUMENT for a name that is not 1 to 128 bytes of [A-Za-z0-9._-];
  // ALREADY_EXISTS for a name in use (also while requests started before that name was
  // removed are still running); RESOURCE_EXHAUSTED past max_adapters; FAILED_PRECONDITION
  // when the runner has no slots. RemoveAdapter: NOT_FOUND; requests already using the
  // adapter finish with it, later ones get NOT_FOUND; its slot is emptied and its blocks
  // leave the prefix cache once no request uses it.
  absl::Status AddAdapter(std::shared_ptr<const lora::LoraAdapter> adapter);
  absl::Status RemoveAdapter(const std::string& name);
  std::vector<AdapterInfo> Adapters() const;

  // Cancels a waiting or running request by id; NOT_FOUND when there is none.
  absl::Status Cancel(const std::string& request_id);

  // Draining: later Submits answer UNAVAILABLE; requests already in finish normally.
  void StopAdmitting();

  // Stops the engine thread; requests still in finish with UNAVAILABLE. Idempotent.
  void Shutdown();

  EngineStatus Status(int32_t max_cached_hashes = 0) const;
  const ModelShape& shape() const { return shape_; }
  const EngineOptions& options() const { return options_; }
  // Steps that ran (tests).
  uint64_t steps() const { return steps_.load(); }

 private:
  Engine(ModelRunner* runner, EngineOptions options);
  absl::Status Validate(const GenerationRequest& r, int32_t* max_new_tokens) const;
  // Submit's part under mu_: the queue's refusals, then the sequence joins incoming_.
  absl::StatusOr<std::shared_ptr<RequestStream>> Enqueue(GenerationRequest request, std::unique_ptr<Sequence> seq);
  void WakeEngine();  // the engine thread runs its loop once more (cancel, adapter changes)
  void ReleaseAdapterSlot(Sequence& seq);  // gives its adapter slot back (once)
  void Loop();
  // Loop's parts: waits for work and moves submitted sequences in (true: shut down);
  // finishes every request with UNAVAILABLE; cancels, schedules and counts one step; ends
  // the step's requests after a failed forward pass.
  bool TakeIncoming(std::vector<std::unique_ptr<Sequence>>* incoming);
  void FailAllOwned();
  StepPlan PlanStep();
  void FailStep(const StepPlan& plan, const absl::Status& st);
  void ReapCancelled();
  void BuildBatch(const StepPlan& plan, StepBatch* batch, std::vector<MaskFiller::Job>* masks);
  absl::Status RunStep(const StepPlan& plan);
  // Advances a constrained sequence by its sampled token; false (the request ended with
  // INTERNAL) when the constraint refuses it.
  bool AcceptConstrained(Sequence& seq, int32_t token, double now);
  void EmitToken(Sequence& seq, const SampleResult& sampled, double now);
  void Finish(Sequence& seq, FinishReason reason, absl::Status status, double now, OutputChunk chunk);
  void Retire(Sequence* seq);  // drops a finished sequence from every list
  void PublishGauges();

  // Engine thread, between steps: forgets unloaded adapters' cached blocks and makes the
  // runner's slots hold what adapters_ assigns (SetAdapter), failing the requests of a slot
  // whose install failed.
  void SyncAdapterSlots();

  ModelRunner* runner_;
  const EngineOptions options_;
  const ModelShape shape_;
  EngineMetrics metrics_;
  AdapterSlots adapters_;                   // thread-safe
  const AdapterMetrics* const base_metrics_;  // the base model's labelled series

  // Engine-thread state.
  KvBlockManager blocks_;
  Scheduler scheduler_;
  std::vector<std::unique_ptr<Sequence>> owned_;  // every waiting or running sequence
  StepLogits logits_;
  MaskFiller mask_filler_;
  uint64_t next_arrival_ = 0;

  // Shared with submitters.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> incoming_;
  std::unordered_map<std::string, std::weak_ptr<RequestStream>> by_id_;
  bool stop_ = false;
  bool wake_ = false;
  std::atomic<bool> admitting_{true};
  std::atomic<int32_t> num_waiting_{0};  // incoming + scheduler waiting
  std::atomic<int32_t> num_running_{0};
  std::atomic<int32_t> kv_free_{0};
  std::atomic<uint64_t> prefix_queries_{0}, prefix_hits_{0};
  std::vector<uint64_t> cached_hashes_;  // under mu_, refreshed every step
  std::atomic<uint64_t> steps_{0};
  uint64_t next_request_number_ = 0;     // under mu_

  std::thread thread_;
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_ENGINE_H_
