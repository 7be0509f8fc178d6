#include "services/worker/parallel/worker_group.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/status_macros.h"
#include "services/worker/parallel/gloo_communicator.h"
#include "services/worker/parallel/local_communicator.h"

namespace phi::worker::parallel {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kArrivedPrefix[] = "group/arrived/";
constexpr char kReadyKey[] = "group/ready";
constexpr char kErrorKey[] = "group/error";

std::string ArrivedKey(int rank) { return absl::StrCat(kArrivedPrefix, rank); }

// "1, 3" from the arrival keys that are missing.
std::string MissingRanks(const std::vector<std::string>& missing_keys) {
  std::vector<std::string> ranks;
  for (const auto& key : missing_keys) ranks.push_back(key.substr(sizeof(kArrivedPrefix) - 1));
  return absl::StrJoin(ranks, ", ");
}

}  // namespace

absl::Status ValidateLeaderAddress(const std::string& leader, const std::string& flag) {
  const size_t colon = leader.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(leader.substr(colon + 1), &port) ||
      port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", leader, "' is not HOST:PORT with a port in 1..65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WorkerGroup>> WorkerGroup::Join(const GroupOptions& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--world-size: ", options.world_size, ", must be >= 1"));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank: ", options.rank, ", allowed 0 .. ", options.world_size - 1));
  }
  std::unique_ptr<WorkerGroup> group(new WorkerGroup(options));
  if (options.world_size == 1) {
    group->host_ = std::make_unique<LocalCommunicator>();
    return group;
  }
  PHI_RETURN_IF_ERROR(ValidateLeaderAddress(options.leader));
  PHI_RETURN_IF_ERROR(group->Meet());
  GlooOptions gloo;
  gloo.hostname = options.hostname;
  gloo.timeout = options.op_timeout;
  PHI_ASSIGN_OR_RETURN(group->host_, GlooCommunicator::Create(group->store_.get(), options.rank,
                                                          options.world_size, gloo));
  return group;
}

absl::Status WorkerGroup::Meet() {
  const int n = options_.world_size;
  const std::string port = options_.leader.substr(options_.leader.rfind(':') + 1);
  if (is_leader()) {
    PHI_ASSIGN_OR_RETURN(server_, RendezvousServer::Start(absl::StrCat("0.0.0.0:", port)));
  }
  store_ = std::make_unique<KvClient>(options_.leader, options_.join_timeout);
  const auto deadline = Clock::now() + options_.join_timeout;
  PHI_RETURN_IF_ERROR(store_->Set(ArrivedKey(options_.rank), options_.hostname));

  if (is_leader()) {
    std::vector<std::string> keys;
    for (int r = 0; r < n; ++r) keys.push_back(ArrivedKey(r));
    PHI_ASSIGN_OR_RETURN(auto missing, store_->Wait(keys, options_.join_timeout));
    if (!missing.empty()) {
      std::string msg = absl::StrCat("worker group did not form: rank(s) ", MissingRanks(missing), " of ", n,
                                     " did not arrive at leader ", options_.leader, " within ",
                                     options_.join_timeout.count(), " ms");
      // Followers that did arrive read this instead of timing out on their own; keep
      // serving for a few of their poll slices so that they can.
      store_->Set(kErrorKey, msg).IgnoreError();
      std::this_thread::sleep_for(std::chrono::milliseconds(1000));
      return absl::DeadlineExceededError(msg);
    }
    return store_->Set(kReadyKey, "1");
  }

  // Followers poll in short slices so that the leader's verdict (ready or error) reaches
  // them as soon as it is written.
  while (true) {
    auto missing = store_->Wait({kReadyKey}, std::chrono::milliseconds(200));
    if (!missing.ok()) {
      return absl::UnavailableError(absl::StrCat("worker group did not form: rank ", options_.rank,
                                                 " lost the leader before the group was ready: ",
                                                 missing.status().message()));
    }
    if (missing->empty()) return absl::OkStatus();
    if (auto error = store_->Get(kErrorKey); error.ok()) return absl::DeadlineExceededError(*error);
    if (Clock::now() > deadline) {
      std::vector<std::string> keys;
      for (int r = 0; r < n; ++r) keys.push_back(ArrivedKey(r));
      PHI_ASSIGN_OR_RETURN(auto still, store_->Wait(keys, std::chrono::milliseconds(1)));
      return absl::DeadlineExceededError(absl::StrCat(
          "worker group did not form: rank(s) ", MissingRanks(still), " of ", n, " did not arrive at leader ",
          options_.leader, " within ", options_.join_timeout.count(), " ms (seen from rank ", options_.rank, ")"));
    }
  }
}

WorkerGroup::~WorkerGroup() {
  // The communicator goes first: its sockets close before the store does.
  host_.reset();
  store_.reset();
  server_.reset();
}

}  // namespace phi::worker::parallel
