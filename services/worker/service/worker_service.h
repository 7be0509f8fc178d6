// phi.v1.WorkerService over the engine, on gRPC's sync API (a thread per stream: simple, and
// the CPU worker serves tens of streams, not thousands). The service exists before the model
// is loaded so that health checks answer NOT_SERVING while it loads; Generate answers
// UNAVAILABLE until SetEngine and SetReady(true).
#ifndef PHI_SERVICES_WORKER_SERVICE_WORKER_SERVICE_H_
#define PHI_SERVICES_WORKER_SERVICE_WORKER_SERVICE_H_

#include <atomic>
#include <string>

#include "phi/v1/worker.grpc.pb.h"
#include "services/common/metrics/registry.h"
#include "services/worker/engine/engine.h"

namespace phi::worker {

class WorkerServiceImpl final : public phi::v1::WorkerService::Service {
 public:
  WorkerServiceImpl(std::string model_name, int32_t world_size,
                    metrics::Registry* registry = &metrics::DefaultRegistry());

  // The engine must outlive the service's calls (set once, before SetReady(true)).
  void SetEngine(Engine* engine) { engine_.store(engine); }
  // Ready: model loaded and one forward pass done, not draining. Drives GetStatus.ready and
  // phi_worker_ready (the gRPC health status is the server's, set beside this).
  void SetReady(bool ready);
  bool ready() const { return ready_.load(); }

  grpc::Status Generate(grpc::ServerContext* context, const phi::v1::GenerateRequest* request,
                        grpc::ServerWriter<phi::v1::GenerateResponse>* writer) override;
  grpc::Status GetStatus(grpc::ServerContext* context, const phi::v1::GetStatusRequest* request,
                         phi::v1::GetStatusResponse* response) override;
  grpc::Status Cancel(grpc::ServerContext* context, const phi::v1::CancelRequest* request,
                      phi::v1::CancelResponse* response) override;

 private:
  const std::string model_name_;
  const int32_t world_size_;
  metrics::Gauge& ready_gauge_;
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> ready_{false};
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_WORKER_SERVICE_H_
