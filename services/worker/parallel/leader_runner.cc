#include "services/worker/parallel/leader_runner.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/parallel/adapter_install.h"
#include "services/worker/parallel/step_codec.h"

namespace phi::worker::parallel {

bool IsGroupFatal(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

LeaderRunner::LeaderRunner(worker::ModelRunner* shard, Communicator* host, LeaderOptions options)
    : shard_(shard), host_(host), options_(std::move(options)), channel_(host) {
  if (host_->world_size() > 1) heartbeat_ = std::thread([this] { HeartbeatLoop(); });
}

LeaderRunner::~LeaderRunner() { Shutdown(); }

absl::Status LeaderRunner::Broken(absl::Status status) {
  // Callers hold mu_.
  if (broken_.ok()) {
    broken_ = absl::UnavailableError(
        absl::StrCat("tensor-parallel group of ", host_->world_size(), " is broken: ", status.message()));
    if (options_.on_failure) options_.on_failure(broken_);
  }
  return broken_;
}

absl::Status LeaderRunner::SendLocked(const std::string& message) {
  if (!broken_.ok()) return broken_;
  if (shut_down_) return absl::UnavailableError("tensor-parallel group is shut down");
  if (host_->world_size() == 1) return absl::OkStatus();
  if (auto s = channel_.Send(message); !s.ok()) return Broken(s);
  last_send_ = std::chrono::steady_clock::now();
  return absl::OkStatus();
}

absl::Status LeaderRunner::AllocateKvCache(const worker::KvCacheSpec& spec) {
  std::lock_guard<std::mutex> lock(mu_);
  PHI_RETURN_IF_ERROR(SendLocked(EncodeAllocateKv(step_index_, spec)));
  auto s = shard_->AllocateKvCache(spec);
  if (!s.ok() && IsGroupFatal(s)) return Broken(s);
  return s;
}

absl::Status LeaderRunner::Step(const worker::StepBatch& batch, worker::StepLogits* out) {
  std::lock_guard<std::mutex> lock(mu_);
  PHI_RETURN_IF_ERROR(SendLocked(EncodeStep(step_index_, batch)));
  ++step_index_;
  auto s = shard_->Step(batch, out);
  if (!s.ok() && IsGroupFatal(s)) return Broken(s);
  // The step's collectives showed every rank alive: the heartbeat clock restarts here, so a
  // long step is not followed by a needless heartbeat ahead of the next one.
  last_send_ = std::chrono::steady_clock::now();
  return s;
}

absl::Status LeaderRunner::SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) {
  std::lock_guard<std::mutex> lock(mu_);
  if (host_->world_size() == 1) return shard_->SetAdapter(slot, std::move(adapter));
  // Refused here, before any rank is told: the slots are the same on every rank.
  if (slot < 1 || slot > shard_->max_adapter_slots()) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter slot ", slot, " is outside [1, ", shard_->max_adapter_slots(), "]"));
  }
  if (adapter != nullptr && adapter->path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter '", adapter->name, "': no folder to read it from on the other ranks"));
  }
  PHI_RETURN_IF_ERROR(SendLocked(adapter == nullptr ? EncodeSetAdapter(step_index_, slot, "", "")
                                                    : EncodeSetAdapter(step_index_, slot, adapter->name, adapter->path)));
  absl::StatusOr<absl::Status> group = InstallAdapterOnGroup(shard_, host_, slot, std::move(adapter));
  if (!group.ok()) return Broken(group.status());
  last_send_ = std::chrono::steady_clock::now();
  return *group;
}

void LeaderRunner::HeartbeatLoop() {
  std::unique_lock<std::mutex> stop_lock(stop_mu_);
  while (!stop_cv_.wait_for(stop_lock, options_.heartbeat_interval / 2, [this] { return stop_; })) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.ok() || shut_down_) return;
    if (std::chrono::steady_clock::now() - last_send_ < options_.heartbeat_interval) continue;
    // The broadcast tells followers the leader lives; the barrier after it tells the leader
    // that every follower does (a send to a dead peer can succeed into the socket buffer),
    // so an idle group notices a lost rank within one interval, not at the next request.
    if (!SendLocked(EncodeControl(StepKind::kHeartbeat, step_index_)).ok()) return;
    if (auto st = host_->Barrier(); !st.ok()) Broken(st).IgnoreError();
  }
}

void LeaderRunner::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return;
  if (broken_.ok() && host_->world_size() > 1) {
    // Best effort: a follower that misses it times out and exits non-zero anyway.
    channel_.Send(EncodeControl(StepKind::kShutdown, step_index_)).IgnoreError();
  }
  shut_down_ = true;
}

absl::Status LeaderRunner::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

uint64_t LeaderRunner::broadcast_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return channel_.bytes();
}

}  // namespace phi::worker::parallel
