// phi.v1.WorkerService over the engine, on gRPC's callback API. Generate streams are reactors
// (generate_call.h) fed by a small StreamWritePool, not a thread per stream: the GPU worker
// serves 256 concurrent sequences, and the sync API woke 256 threads a step and polled each
// client for cancellation every 10 ms. GetStatus and Cancel are callback methods too: they
// only read counters or flag a request, never block, so they answer inline on gRPC's
// callback threads (and the service needs no sync-server threads of its own). A constrained
// Generate compiles its grammar (up to --grammar-compile-timeout-seconds) on a CallPreparer
// thread, its call pending meanwhile, never on a callback thread.
// LoadAdapter reads a LoRA adapter's files on an adapter-loader thread (at most
// kMaxLoadingAdapters at once), never on a callback thread nor the engine's; UnloadAdapter
// only unregisters, inline.
// The service exists before the model is loaded so that health checks answer NOT_SERVING
// while it loads; Generate answers UNAVAILABLE until SetEngine and SetReady(true).
#ifndef PHI_SERVICES_WORKER_SERVICE_WORKER_SERVICE_H_
#define PHI_SERVICES_WORKER_SERVICE_WORKER_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "phi/v1/worker.grpc.pb.h"
#include "services/common/metrics/registry.h"
#include "services/worker/engine/engine.h"
#include "services/worker/grammar/constraint_compiler.h"
#include "services/worker/service/call_preparer.h"
#include "services/worker/service/generate_call.h"
#include "services/worker/service/proto_convert.h"
#include "services/worker/service/stream_write_pool.h"

namespace phi::worker {

// Submits a one-token request (prompt {0}, through `adapter` when not empty) and waits for its
// end: the worker's warm-up and adapter probe. The request's error, if it ends with one.
absl::Status RunOneTokenRequest(Engine& engine, const std::string& adapter);

class WorkerServiceImpl final : public phi::v1::WorkerService::CallbackService {
 public:
  // Reads the PEFT adapter folder `path` as `name` for this worker's model
  // (lora::LoadPeftAdapter with the model's config and --max-lora-rank in phi-worker).
  using AdapterLoader = std::function<absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>>(
      const std::string& name, const std::string& path)>;
  // LoadAdapter calls reading files at once; more answer RESOURCE_EXHAUSTED.
  static constexpr int kMaxLoadingAdapters = 4;
  static constexpr size_t kMaxAdapterPathBytes = 4096;

  // Threads that build and start Generate's writes (2: at 256 streams a step's messages take
  // well under a millisecond to build; OnWriteDone's writes run on gRPC's own threads).
  static constexpr int kDefaultWriteThreads = 2;

  WorkerServiceImpl(std::string model_name, int32_t world_size,
                    metrics::Registry* registry = &metrics::DefaultRegistry(),
                    int write_threads = kDefaultWriteThreads);

  // The model's defaults for unset sampling fields; set once, before SetEngine.
  void SetGenerationDefaults(const model::GenerationDefaults& defaults) { defaults_ = defaults; }
  // Compiles sampling.constraint (null: constrained requests answer FAILED_PRECONDITION).
  // Must outlive the service's calls; set once, before SetReady(true).
  void SetConstraintCompiler(ConstraintCompiler* compiler) { compiler_.store(compiler); }
  // LoRA adapters: the loader and the runner's slot count (GetStatus.max_adapter_slots; 0:
  // LoadAdapter answers FAILED_PRECONDITION). Set once, before SetReady(true); without a
  // loader LoadAdapter answers FAILED_PRECONDITION too.
  void SetAdapterSupport(AdapterLoader loader, int32_t max_adapter_slots) {
    adapter_loader_ = std::move(loader);
    max_adapter_slots_.store(max_adapter_slots);
  }
  // The engine must outlive the service's calls (set once, before SetReady(true)).
  void SetEngine(Engine* engine) { engine_.store(engine); }
  // Ready: model loaded and one forward pass done, not draining. Drives GetStatus.ready and
  // phi_worker_ready (the gRPC health status is the server's, set beside this).
  void SetReady(bool ready);
  bool ready() const { return ready_.load(); }

  grpc::ServerWriteReactor<phi::v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                                const phi::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context, const phi::v1::GetStatusRequest* request,
                                      phi::v1::GetStatusResponse* response) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context, const phi::v1::CancelRequest* request,
                                   phi::v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const phi::v1::LoadAdapterRequest* request,
                                        phi::v1::LoadAdapterResponse* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const phi::v1::UnloadAdapterRequest* request,
                                          phi::v1::UnloadAdapterResponse* response) override;

  // What LoadAdapter checks before reading anything: the name, the path, and that this
  // worker serves adapters and has not registered the name yet. phi-worker applies it to
  // --lora too.
  absl::Status CheckLoadAdapter(const std::string& name, const std::string& path) const;
  // Reads and registers an adapter (blocking: an adapter-loader thread, or start-up). With
  // `probe`, then runs a one-token request through it, so that every rank of a group reads
  // and installs it now: when that fails (a rank cannot read the folder) the adapter is
  // unregistered and the rank's status returned. A probe that finds every slot busy
  // (RESOURCE_EXHAUSTED) leaves it registered.
  absl::StatusOr<AdapterInfo> LoadAndAddAdapter(Engine* engine, const std::string& name, const std::string& path,
                                                bool probe);

 private:
  // Constrained calls at once compiling their grammar (on CallPreparer threads).
  static constexpr int kMaxPreparingCalls = 256;

  // A constrained Generate: compiles `spec` into r.constraint and submits on a preparer
  // thread, the call pending meanwhile; a bad grammar refuses the call before any token.
  GenerateReactor* StartConstrained(Engine* engine, GenerationRequest r, ConstraintSpec spec);
  absl::Status CompileConstraint(const ConstraintSpec& spec, GenerationRequest* r);

  const std::string model_name_;
  const int32_t world_size_;
  model::GenerationDefaults defaults_;
  metrics::Gauge& ready_gauge_;
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<ConstraintCompiler*> compiler_{nullptr};
  std::atomic<bool> ready_{false};
  AdapterLoader adapter_loader_;
  std::atomic<int32_t> max_adapter_slots_{0};
  // Declared last: destroyed (threads joined) first. The gRPC server is shut down before the
  // service is destroyed, so no call still needs them then; the preparer goes before the
  // pool its jobs hand calls to.
  StreamWritePool write_pool_;
  CallPreparer preparer_{kMaxPreparingCalls};
  CallPreparer adapter_loads_{kMaxLoadingAdapters};
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_WORKER_SERVICE_H_
