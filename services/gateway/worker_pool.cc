#include "services/gateway/worker_pool.h"

#include <netdb.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/common/logging.h"
#include "services/common/prefix_hash.h"

namespace phi::gateway {

std::string_view GroupStateName(GroupState s) {
  switch (s) {
    case GroupState::kReady:
      return "ready";
    case GroupState::kNotReady:
      return "not_ready";
    case GroupState::kUnreachable:
      return "unreachable";
    default:
      return "unknown";
  }
}

WorkerGroup::WorkerGroup(std::string address, int keepalive_ms) : address_(std::move(address)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  if (keepalive_ms > 0) {
    // A worker that stops answering pings (SIGSTOP, a wedged process, a dead peer behind a
    // live TCP path) closes the connection: its streams fail UNAVAILABLE and are retried
    // when no token went out. Pings go with or without calls and without waiting for data
    // (the worker's server allows one every 500 ms, services/common/server.cc).
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive_ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  stub_ = phi::v1::WorkerService::NewStub(grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args));
}

GroupState WorkerGroup::state() const {
  std::lock_guard<std::mutex> l(mu_);
  return state_;
}

phi::v1::GetStatusResponse WorkerGroup::status() const {
  std::lock_guard<std::mutex> l(mu_);
  return status_;
}

namespace {

bool ListsAdapter(const phi::v1::GetStatusResponse& status, std::string_view name) {
  return std::any_of(status.adapters().begin(), status.adapters().end(),
                     [&](const phi::v1::AdapterInfo& a) { return a.name() == name; });
}

}  // namespace

bool WorkerGroup::HasAdapter(std::string_view name) const {
  std::lock_guard<std::mutex> l(mu_);
  return ListsAdapter(status_, name);
}

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const WorkerPoolOptions& options,
                                                               metrics::Registry* registry) {
  std::unique_ptr<WorkerPool> p(new WorkerPool());
  p->options_ = options;
  if (options.workers.empty()) return absl::InvalidArgumentError("--workers: at least one host:port is required");
  if (absl::StartsWith(options.workers, "dns:///")) {
    absl::string_view rest = absl::StripPrefix(options.workers, "dns:///");
    size_t colon = rest.rfind(':');
    int port = 0;
    if (colon == std::string_view::npos || !absl::SimpleAtoi(rest.substr(colon + 1), &port)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers: '", options.workers, "' must be dns:///name:port"));
    }
  }
  p->groups_gauge_ = &registry->AddGauge("phi_gateway_worker_groups", "Worker groups by health state", {"state"});
  p->CheckAll();
  p->thread_ = std::thread([raw = p.get()] { raw->Loop(); });
  return p;
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<std::string> WorkerPool::Resolve() const {
  std::vector<std::string> out;
  if (!absl::StartsWith(options_.workers, "dns:///")) {
    for (absl::string_view a : absl::StrSplit(options_.workers, ',', absl::SkipWhitespace())) {
      out.emplace_back(absl::StripAsciiWhitespace(a));
    }
    return out;
  }
  // A headless service: every A/AAAA record is one group's rank 0.
  absl::string_view rest = absl::StripPrefix(options_.workers, "dns:///");
  size_t colon = rest.rfind(':');
  std::string host(rest.substr(0, colon)), port(rest.substr(colon + 1));
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return out;
  std::set<std::string> seen;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (ai->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, buf, sizeof buf);
      seen.insert(absl::StrCat(buf, ":", port));
    } else if (ai->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, buf, sizeof buf);
      seen.insert(absl::StrCat("[", buf, "]:", port));
    }
  }
  freeaddrinfo(res);
  out.assign(seen.begin(), seen.end());
  return out;
}

void WorkerPool::CheckAll() {
  std::lock_guard<std::mutex> refresh(refresh_mu_);
  std::vector<std::string> addresses = Resolve();
  std::vector<std::shared_ptr<WorkerGroup>> groups;
  {
    std::lock_guard<std::mutex> l(mu_);
    // Keep groups still resolved (their state), add new ones, drop the rest
    // (requests running on a dropped group keep it alive through shared_ptr).
    for (const auto& a : addresses) {
      auto it = std::find_if(groups_.begin(), groups_.end(), [&](const auto& g) { return g->address() == a; });
      groups.push_back(it != groups_.end() ? *it
                                           : std::make_shared<WorkerGroup>(
                                                 a, static_cast<int>(options_.keepalive_seconds * 1000)));
    }
  }
  // Every group at once: a group that does not answer costs the others nothing, and the
  // round lasts at most status_timeout_seconds.
  struct Probe {
    grpc::ClientContext ctx;
    phi::v1::GetStatusResponse resp;
    grpc::Status status;
  };
  std::vector<Probe> probes(groups.size());
  std::mutex done_mu;
  std::condition_variable done_cv;
  size_t done = 0;
  const phi::v1::GetStatusRequest request;
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(options_.status_timeout_seconds * 1000));
  for (size_t i = 0; i < groups.size(); ++i) {
    Probe& p = probes[i];
    p.ctx.set_deadline(deadline);
    groups[i]->stub()->async()->GetStatus(&p.ctx, &request, &p.resp, [&, i](grpc::Status s) {
      probes[i].status = std::move(s);
      std::lock_guard<std::mutex> l(done_mu);
      ++done;
      done_cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> l(done_mu);
    done_cv.wait(l, [&] { return done == groups.size(); });
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    const grpc::Status& s = probes[i].status;
    phi::v1::GetStatusResponse& resp = probes[i].resp;
    std::lock_guard<std::mutex> l(g->mu_);
    GroupState before = g->state_;
    if (!s.ok()) {
      g->state_ = GroupState::kUnreachable;
    } else {
      g->state_ = resp.ready() ? GroupState::kReady : GroupState::kNotReady;
      g->cached_sorted_.assign(resp.cached_block_hashes().begin(), resp.cached_block_hashes().end());
      std::sort(g->cached_sorted_.begin(), g->cached_sorted_.end());
      resp.clear_cached_block_hashes();
      g->status_ = std::move(resp);
    }
    if (before != g->state_) {
      PHI_LOG(INFO, "worker_group_state")
          .Str("address", g->address())
          .Str("state", GroupStateName(g->state_))
          .Str("error", s.ok() ? "" : s.error_message());
    }
  }
  std::map<std::string, int> counts = {{"ready", 0}, {"not_ready", 0}, {"unreachable", 0}, {"unknown", 0}};
  for (auto& g : groups) counts[std::string(GroupStateName(g->state()))]++;
  for (const auto& [state, n] : counts) groups_gauge_->WithLabels({state}).Set(n);
  {
    std::lock_guard<std::mutex> l(mu_);
    groups_ = std::move(groups);
  }
  std::lock_guard<std::mutex> l(checked_mu_);
  if (checked_) checked_();
}

void WorkerPool::SetCheckedCallback(std::function<void()> callback) {
  std::lock_guard<std::mutex> l(checked_mu_);
  checked_ = std::move(callback);
}

std::vector<std::shared_ptr<WorkerGroup>> WorkerPool::Groups() const {
  std::lock_guard<std::mutex> l(mu_);
  return groups_;
}

void WorkerPool::Loop() {
  std::unique_lock<std::mutex> l(stop_mu_);
  while (!stop_cv_.wait_for(l, std::chrono::milliseconds(static_cast<int64_t>(options_.health_interval_seconds * 1000)),
                            [this] { return stop_; })) {
    l.unlock();
    CheckAll();
    l.lock();
  }
}

void WorkerPool::RefreshNow() { CheckAll(); }

void WorkerPool::MarkFailed(WorkerGroup* group) {
  std::lock_guard<std::mutex> l(group->mu_);
  if (group->state_ == GroupState::kReady) {
    group->state_ = GroupState::kUnreachable;
    PHI_LOG(WARNING, "worker_group_failed").Str("address", group->address());
  }
}

bool WorkerPool::Score(WorkerGroup& g, const std::string& model, const std::string& adapter,
                       std::span<const int32_t> prompt_ids, PromptHashes* hashes, Candidate* out) {
  std::lock_guard<std::mutex> l(g.mu_);
  if (g.state_ != GroupState::kReady) return false;
  if (!model.empty() && g.status_.model() != model) return false;
  if (!adapter.empty() && !ListsAdapter(g.status_, adapter)) return false;
  out->cached = 0;
  const int32_t bs = g.status_.kv_block_size();
  if (bs > 0 && !g.cached_sorted_.empty()) {
    // The prompt is hashed once per block size among the groups.
    if (bs != hashes->block_size) {
      // Every candidate has the same adapter, whose name roots the worker's chain.
      hashes->hashes = common::PrefixBlockHashes(prompt_ids, bs, static_cast<int32_t>(prompt_ids.size() / bs),
                                                 common::PrefixHashRoot(adapter));
      hashes->block_size = bs;
    }
    const std::vector<uint64_t>& h = hashes->hashes;
    while (out->cached < static_cast<int>(h.size()) &&
           std::binary_search(g.cached_sorted_.begin(), g.cached_sorted_.end(), h[out->cached])) {
      ++out->cached;
    }
  }
  out->load = std::max<int64_t>(g.status_.waiting() + g.status_.running(), g.in_flight.load());
  out->free_frac = g.status_.kv_blocks_total() > 0
                       ? static_cast<double>(g.status_.kv_blocks_free()) / g.status_.kv_blocks_total()
                       : 0;
  return true;
}

std::shared_ptr<WorkerGroup> WorkerPool::Pick(const std::string& model, const std::string& adapter,
                                              std::span<const int32_t> prompt_ids, const WorkerGroup* exclude) {
  std::vector<std::shared_ptr<WorkerGroup>> groups;
  {
    std::lock_guard<std::mutex> l(mu_);
    groups = groups_;
  }
  // Score: (cached prefix blocks desc, load asc, free KV fraction desc, round robin). Affinity
  // only while the cached group is not much busier than the best.
  auto prefer = [](const Candidate& c, const Candidate& best) {
    if (c.cached != best.cached && std::abs(c.load - best.load) <= 4) return c.cached > best.cached;
    if (c.load != best.load) return c.load < best.load;
    return c.free_frac > best.free_frac;
  };
  std::shared_ptr<WorkerGroup> best;
  Candidate best_score;
  PromptHashes hashes;
  const uint64_t start = rr_.fetch_add(1, std::memory_order_relaxed);
  for (size_t k = 0; k < groups.size(); ++k) {
    auto& g = groups[(start + k) % groups.size()];
    Candidate c;
    if (g.get() == exclude || !Score(*g, model, adapter, prompt_ids, &hashes, &c)) continue;
    if (!best || prefer(c, best_score)) {
      best = g;
      best_score = c;
    }
  }
  return best;
}

std::vector<ModelSummary> WorkerPool::Models() const {
  std::vector<std::shared_ptr<WorkerGroup>> groups = Groups();
  std::vector<ModelSummary> out;
  std::map<std::string, ModelSummary> adapters;  // by name: listed after the base models
  for (auto& g : groups) {
    std::lock_guard<std::mutex> l(g->mu_);
    if (g->state_ != GroupState::kReady) continue;
    const phi::v1::GetStatusResponse& st = g->status_;
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& m) { return m.name == st.model(); });
    if (it == out.end()) {
      const auto& defaults = st.generation_defaults();
      ModelSummary m;
      m.name = st.model();
      m.max_context_tokens = st.max_context_tokens();
      m.vocab_size = st.vocab_size();
      m.default_temperature = defaults.sampling().temperature();
      m.default_max_new_tokens = defaults.max_new_tokens();
      out.push_back(std::move(m));
      it = out.end() - 1;
    }
    it->ready_groups++;
    for (const phi::v1::AdapterInfo& a : st.adapters()) {
      auto [at, added] = adapters.try_emplace(a.name());
      if (added) {
        // Served with its base model's limits and generation defaults.
        at->second = *it;
        at->second.name = a.name();
        at->second.parent = st.model();
        at->second.root = a.path();
        at->second.ready_groups = 0;
      }
      at->second.ready_groups++;
    }
  }
  for (auto& [name, m] : adapters) out.push_back(std::move(m));
  return out;
}

std::string WorkerPool::Describe() const {
  std::lock_guard<std::mutex> l(mu_);
  if (groups_.empty()) return absl::StrCat("no address resolved from '", options_.workers, "'");
  std::vector<std::string> parts;
  for (const auto& g : groups_) parts.push_back(absl::StrCat(g->address(), "=", std::string(GroupStateName(g->state()))));
  return absl::StrJoin(parts, ", ");
}

std::string WorkerPool::ClientGroupName(const WorkerGroup* group) const {
  std::lock_guard<std::mutex> l(mu_);
  for (size_t i = 0; i < groups_.size(); ++i) {
    if (groups_[i].get() == group) return absl::StrCat("worker group ", i + 1);
  }
  return "a worker group";  // resolved away since it was picked
}

std::string WorkerPool::DescribeForClients() const {
  std::lock_guard<std::mutex> l(mu_);
  if (groups_.empty()) return "none resolved from --workers";
  int counts[4] = {0, 0, 0, 0};
  for (const auto& g : groups_) ++counts[static_cast<int>(g->state())];
  std::string states;
  for (GroupState st : {GroupState::kUnreachable, GroupState::kNotReady, GroupState::kUnknown, GroupState::kReady}) {
    if (counts[static_cast<int>(st)] == 0) continue;
    absl::StrAppend(&states, states.empty() ? "" : ", ", counts[static_cast<int>(st)], " ", std::string(GroupStateName(st)));
  }
  return absl::StrCat(groups_.size(), groups_.size() == 1 ? " group: " : " groups: ", states);
}

}  // namespace phi::gateway
