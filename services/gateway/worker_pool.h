// The worker groups behind the gateway: from a list of rank-0 addresses or a DNS
// name that resolves to many (a Kubernetes headless service, "dns:///name:port"),
// health-checked with GetStatus, chosen by load and prefix-cache affinity.
#ifndef PHI_SERVICES_GATEWAY_WORKER_POOL_H_
#define PHI_SERVICES_GATEWAY_WORKER_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "phi/v1/worker.grpc.pb.h"
#include "services/common/metrics/registry.h"

namespace phi::gateway {

enum class GroupState { kUnknown, kReady, kNotReady, kUnreachable };
std::string_view GroupStateName(GroupState s);

class WorkerGroup {
 public:
  // keepalive_ms: the channel pings the worker this often and drops the connection when a ping
  // goes unanswered as long (a stopped or wedged process fails its calls in seconds, not at
  // the client's deadline); 0: no pings.
  explicit WorkerGroup(std::string address, int keepalive_ms = 0);
  const std::string& address() const { return address_; }
  phi::v1::WorkerService::Stub* stub() { return stub_.get(); }

  GroupState state() const;
  phi::v1::GetStatusResponse status() const;
  // Its last GetStatus lists the LoRA adapter `name`.
  bool HasAdapter(std::string_view name) const;
  // Requests this gateway has running on the group right now.
  std::atomic<int> in_flight{0};

 private:
  friend class WorkerPool;
  std::string address_;
  std::unique_ptr<phi::v1::WorkerService::Stub> stub_;
  mutable std::mutex mu_;
  GroupState state_ = GroupState::kUnknown;
  phi::v1::GetStatusResponse status_;
  std::vector<uint64_t> cached_sorted_;  // status_.cached_block_hashes, sorted
};

struct WorkerPoolOptions {
  // Comma-separated host:port list, or "dns:///name:port".
  std::string workers;
  double health_interval_seconds = 1.0;
  // A GetStatus that takes longer takes the group out of rotation (a stopped process accepts
  // connections but answers nothing). Checks run in parallel, so a hung group is out within
  // health_interval_seconds + status_timeout_seconds.
  double status_timeout_seconds = 2.0;
  // HTTP/2 keepalive pings on every worker channel, interval and timeout (0: none).
  double keepalive_seconds = 1.0;
};

// A model this pool serves: a base model, or a LoRA adapter on one (GetStatusResponse.adapters).
struct ModelSummary {
  // What requests name it by: the base model's name, or the adapter's.
  std::string name;
  // For an adapter: the base model it adapts (empty for a base model) and the folder it was
  // read from (AdapterInfo.path).
  std::string parent;
  std::string root;
  int32_t max_context_tokens = 0;
  int32_t vocab_size = 0;
  int ready_groups = 0;
  // The model's generation defaults (GetStatusResponse.generation_defaults, from its
  // generation_config.json) as its first ready group reports them: the temperature a request
  // that states none gets (0: greedy), and the max_new_tokens of one that leaves it 0 (0: the
  // worker reported none).
  float default_temperature = 0;
  int32_t default_max_new_tokens = 0;
};

class WorkerPool {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const WorkerPoolOptions& options,
                                                            metrics::Registry* registry);
  ~WorkerPool();

  // Chooses a ready group serving `model` (a base model's name; empty: any) with the LoRA
  // adapter `adapter` loaded (empty: the base weights), not `exclude`: the one holding the
  // longest cached prefix of `prompt_ids` (hashed from common::PrefixHashRoot(adapter), as the
  // worker's cache keys its blocks), then the least loaded (waiting + running, at least this
  // gateway's own in-flight count), then the most free KV. nullptr when none is ready.
  std::shared_ptr<WorkerGroup> Pick(const std::string& model, const std::string& adapter,
                                    std::span<const int32_t> prompt_ids, const WorkerGroup* exclude);
  // A group failed a call: take it out of rotation until its next good check.
  void MarkFailed(WorkerGroup* group);
  // Checks every group now (also resolves the DNS name again).
  void RefreshNow();
  // Models served by ready groups, one entry per name: the base models first (in group
  // order), then the LoRA adapters ready groups list (by name; ready_groups counts the groups
  // that have the adapter loaded).
  std::vector<ModelSummary> Models() const;
  // The groups as last resolved (any state).
  std::vector<std::shared_ptr<WorkerGroup>> Groups() const;
  // Called after every health round (on the thread that ran it: the pool's, or RefreshNow's
  // caller); must not block. Empty: none. Set before the owner of the callback goes away.
  void SetCheckedCallback(std::function<void()> callback);
  // "host:port=ready, host:port=unreachable": for logs only (clients never see addresses).
  std::string Describe() const;
  // What clients are told instead: "worker group 2" (its place in --workers, from 1), and the
  // states of all groups, "2 groups: 1 unreachable, 1 not ready" ("none resolved from --workers").
  std::string ClientGroupName(const WorkerGroup* group) const;
  std::string DescribeForClients() const;

 private:
  WorkerPool() = default;
  std::vector<std::string> Resolve() const;
  // A group Pick may choose: how many of the prompt's full blocks it has cached, its load
  // (queued + running, or the gateway's own count when higher) and free KV fraction.
  struct Candidate {
    int cached = -1;
    int64_t load = 0;
    double free_frac = 0;
  };
  // The prompt's block hashes for one block size (computed for the first group that needs them).
  struct PromptHashes {
    int32_t block_size = -1;
    std::vector<uint64_t> hashes;
  };
  // False when `g` cannot take the request (not ready, another model, adapter not loaded).
  static bool Score(WorkerGroup& g, const std::string& model, const std::string& adapter,
                    std::span<const int32_t> prompt_ids, PromptHashes* hashes, Candidate* out);
  void CheckAll();
  void Loop();

  WorkerPoolOptions options_;
  mutable std::mutex mu_;  // guards groups_
  std::vector<std::shared_ptr<WorkerGroup>> groups_;
  std::mutex refresh_mu_;  // one CheckAll at a time
  std::thread thread_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  metrics::Family<metrics::Gauge>* groups_gauge_ = nullptr;
  std::atomic<uint64_t> rr_{0};
  std::mutex checked_mu_;
  std::function<void()> checked_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_WORKER_POOL_H_
