// The LoRA adapters this gateway was asked to load (ChatService.LoadLoraAdapter, POST
// /v1/load_lora_adapter), kept loaded on every worker group: a load goes to every ready group
// at once and is undone on all of them when any refuses; groups that become ready later, or
// restart without it, get it from Reconcile after a health round (the pool's status polling).
// Every worker call runs on one thread of its own (loads, unloads and reconciling one at a time,
// never on gRPC's callback threads or the HTTP server's I/O threads).
#ifndef PHI_SERVICES_GATEWAY_LORA_ADMIN_H_
#define PHI_SERVICES_GATEWAY_LORA_ADMIN_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "services/gateway/blocking_executor.h"
#include "services/gateway/worker_pool.h"

namespace phi::gateway {

struct LoraAdminOptions {
  // Deadline of one LoadAdapter / UnloadAdapter call on a group (the worker reads the files).
  double call_timeout_seconds = 60;
  // A group that refused to load an adapter during Reconcile is asked again after this.
  double reconcile_retry_seconds = 30;
};

class LoraAdmin {
 public:
  explicit LoraAdmin(WorkerPool* pool, LoraAdminOptions options = {});
  // Stops reconciling; runs what was already posted.
  ~LoraAdmin();
  LoraAdmin(const LoraAdmin&) = delete;
  LoraAdmin& operator=(const LoraAdmin&) = delete;

  // Loads adapter `name` from the folder `path` (on the workers' filesystem) onto every ready
  // group; `done` gets the adapter's model entry (parent: its base) on the admin thread.
  // Errors: INVALID_ARGUMENT (the name or path; the worker's own for a malformed adapter,
  // naming the file), ALREADY_EXISTS (a served model or adapter has that name), UNAVAILABLE
  // (no ready group), or a group's refusal (NOT_FOUND for a missing folder, ...) prefixed
  // with its address: then it is unloaded again from the groups that had loaded it.
  void Load(std::string name, std::string path, std::function<void(absl::StatusOr<ModelSummary>)> done);
  // Unloads `name` from every group that has it and stops reconciling it. NOT_FOUND when no
  // group has it and it was not loaded through this gateway.
  void Unload(std::string name, std::function<void(absl::Status)> done);

  // The adapters loaded through this gateway: name -> path.
  std::map<std::string, std::string> Loaded() const;

 private:
  absl::StatusOr<ModelSummary> LoadNow(const std::string& name, const std::string& path);
  absl::Status UnloadNow(const std::string& name);
  // Loads the adapters in Loaded() onto ready groups that do not list them.
  void Reconcile();

  WorkerPool* const pool_;
  const LoraAdminOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> loaded_;
  bool reconcile_posted_ = false;
  // Admin thread only: (group address, adapter) -> when Reconcile may try it again.
  std::map<std::pair<std::string, std::string>, std::chrono::steady_clock::time_point> retry_at_;
  std::unique_ptr<BlockingExecutor> thread_;  // last: joined first
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_LORA_ADMIN_H_
