// phi-worker: serves phi.v1.WorkerService for one model on this machine's CPU or CUDA GPU,
// alone or as one rank of a tensor-parallel group (--world-size > 1).
#include <cstdio>

#include "services/common/config.h"
#include "services/common/server.h"
#include "services/worker/service/worker_app.h"

int main(int argc, char** argv) {
  phi::common::DisableMutexDeadlockDetection();
  phi::common::BlockTerminationSignals();
  phi::worker::WorkerConfig config;
  phi::common::FlagSet flags("phi-worker", "Serves phi.v1.WorkerService: continuous-batching generation.");
  phi::worker::AddWorkerFlags(flags, &config);
  phi::common::ParseFlagsOrExit(flags, argc, argv);
  if (absl::Status st = phi::worker::ValidateWorkerConfig(config); !st.ok()) {
    std::fprintf(stderr, "phi-worker: %s\n", std::string(st.message()).c_str());
    return 2;
  }
  phi::common::InitLogging(config.server);
  return phi::worker::RunWorker(config);
}
