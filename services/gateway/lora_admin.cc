#include "services/gateway/lora_admin.h"

#include <algorithm>
#include <condition_variable>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/address_redaction.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/gateway/lora_request.h"

namespace phi::gateway {

namespace {

using Groups = std::vector<std::shared_ptr<WorkerGroup>>;
// Starts one call on group `i` with `ctx`; the call reports its status through `done`.
using StartCall = std::function<void(size_t i, WorkerGroup& g, grpc::ClientContext* ctx,
                                     std::function<void(grpc::Status)> done)>;

// Runs one call on every group at once and waits for all of them: a slow group costs the
// others nothing, and the whole lasts at most `timeout_seconds`.
std::vector<grpc::Status> CallEach(const Groups& groups, double timeout_seconds, const StartCall& start) {
  std::vector<grpc::Status> statuses(groups.size());
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts(groups.size());
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0;
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  for (size_t i = 0; i < groups.size(); ++i) {
    contexts[i] = std::make_unique<grpc::ClientContext>();
    contexts[i]->set_deadline(deadline);
    start(i, *groups[i], contexts[i].get(), [&, i](grpc::Status s) {
      std::lock_guard<std::mutex> l(mu);
      statuses[i] = std::move(s);
      ++done;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done == groups.size(); });
  return statuses;
}

Groups ReadyGroups(WorkerPool* pool) {
  Groups out;
  for (auto& g : pool->Groups()) {
    if (g->state() == GroupState::kReady) out.push_back(g);
  }
  return out;
}

// A worker group's refusal as clients see it: the group by its place in --workers, never its
// address (the log line keeps that).
absl::Status GroupError(const WorkerPool& pool, const WorkerGroup& g, const grpc::Status& s) {
  const absl::Status st = common::FromGrpcStatus(s);
  PHI_LOG(WARNING, "lora_group_refused").Str("address", g.address()).Str("error", std::string(st.message()));
  return absl::Status(st.code(), absl::StrCat(pool.ClientGroupName(&g), ": ",
                                              common::RedactAddresses(std::string(st.message()))));
}

}  // namespace

LoraAdmin::LoraAdmin(WorkerPool* pool, LoraAdminOptions options)
    : pool_(pool), options_(options), thread_(std::make_unique<BlockingExecutor>(1)) {
  pool_->SetCheckedCallback([this] {
    {
      std::lock_guard<std::mutex> l(mu_);
      // One pending Reconcile is enough; nothing to keep loaded, nothing to do.
      if (reconcile_posted_ || loaded_.empty()) return;
      reconcile_posted_ = true;
    }
    thread_->Post([this] { Reconcile(); });
  });
}

LoraAdmin::~LoraAdmin() {
  pool_->SetCheckedCallback(nullptr);
  thread_.reset();
}

void LoraAdmin::Load(std::string name, std::string path, std::function<void(absl::StatusOr<ModelSummary>)> done) {
  thread_->Post([this, name = std::move(name), path = std::move(path), done = std::move(done)] {
    done(LoadNow(name, path));
  });
}

void LoraAdmin::Unload(std::string name, std::function<void(absl::Status)> done) {
  thread_->Post([this, name = std::move(name), done = std::move(done)] { done(UnloadNow(name)); });
}

std::map<std::string, std::string> LoraAdmin::Loaded() const {
  std::lock_guard<std::mutex> l(mu_);
  return loaded_;
}

absl::StatusOr<ModelSummary> LoraAdmin::LoadNow(const std::string& name, const std::string& path) {
  if (absl::Status s = ValidateLoraName(name); !s.ok()) return s;
  if (absl::Status s = ValidateLoraPath(path); !s.ok()) return s;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (loaded_.contains(name)) {
      return absl::AlreadyExistsError(absl::StrCat("lora_name: the adapter '", name, "' has already been loaded"));
    }
  }
  Groups groups = ReadyGroups(pool_);
  if (groups.empty()) {
    pool_->RefreshNow();
    groups = ReadyGroups(pool_);
  }
  if (groups.empty()) {
    return absl::UnavailableError(absl::StrCat("no ready worker group to load the adapter on (", pool_->DescribeForClients(), ")"));
  }
  for (const ModelSummary& m : pool_->Models()) {
    if (m.name == name) {
      return absl::AlreadyExistsError(
          m.parent.empty() ? absl::StrCat("lora_name: '", name, "' is the base model's name")
                           : absl::StrCat("lora_name: the adapter '", name, "' has already been loaded (from ",
                                          m.root, ")"));
    }
  }
  phi::v1::LoadAdapterRequest req;
  req.set_name(name);
  req.set_path(path);
  std::vector<phi::v1::LoadAdapterResponse> resps(groups.size());
  const std::vector<grpc::Status> statuses =
      CallEach(groups, options_.call_timeout_seconds, [&](size_t i, WorkerGroup& g, grpc::ClientContext* ctx, auto done) {
        g.stub()->async()->LoadAdapter(ctx, &req, &resps[i], std::move(done));
      });
  absl::Status failure;
  Groups loaded_on;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (statuses[i].ok()) {
      loaded_on.push_back(groups[i]);
    } else if (failure.ok()) {
      failure = GroupError(*pool_, *groups[i], statuses[i]);
    }
  }
  if (!failure.ok()) {
    // All or none: a request for it must find it wherever it is routed.
    if (!loaded_on.empty()) {
      phi::v1::UnloadAdapterRequest unload;
      unload.set_name(name);
      std::vector<phi::v1::UnloadAdapterResponse> ignored(loaded_on.size());
      const std::vector<grpc::Status> undone = CallEach(
          loaded_on, options_.call_timeout_seconds, [&](size_t i, WorkerGroup& g, grpc::ClientContext* ctx, auto done) {
            g.stub()->async()->UnloadAdapter(ctx, &unload, &ignored[i], std::move(done));
          });
      const size_t ok = std::count_if(undone.begin(), undone.end(), [](const grpc::Status& s) { return s.ok(); });
      failure = absl::Status(failure.code(), absl::StrCat(failure.message(), " (unloaded again from the ", ok, " of ",
                                                          loaded_on.size(), " groups that had loaded it)"));
    }
    PHI_LOG(WARNING, "lora_load_failed").Str("adapter", name).Str("path", path).Str("error", failure.ToString());
    return failure;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    loaded_[name] = path;
  }
  PHI_LOG(INFO, "lora_loaded").Str("adapter", name).Str("path", path).Int("groups", static_cast<int64_t>(groups.size()));
  pool_->RefreshNow();  // routes see it from now on, not from the next health round
  for (ModelSummary& m : pool_->Models()) {
    if (m.name == name) return std::move(m);
  }
  // The groups went away meanwhile: the entry as the first one answered.
  ModelSummary m;
  m.name = name;
  m.parent = groups[0]->status().model();
  m.root = resps[0].adapter().path().empty() ? path : resps[0].adapter().path();
  return m;
}

absl::Status LoraAdmin::UnloadNow(const std::string& name) {
  if (absl::Status s = ValidateLoraName(name); !s.ok()) return s;
  bool was_loaded = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    was_loaded = loaded_.erase(name) > 0;  // Reconcile stops loading it from now on
  }
  // Every group that may have it: the ready ones and any other that listed it last.
  Groups groups;
  for (auto& g : pool_->Groups()) {
    if (g->state() == GroupState::kReady || g->HasAdapter(name)) groups.push_back(g);
  }
  phi::v1::UnloadAdapterRequest req;
  req.set_name(name);
  std::vector<phi::v1::UnloadAdapterResponse> resps(groups.size());
  const std::vector<grpc::Status> statuses =
      CallEach(groups, options_.call_timeout_seconds, [&](size_t i, WorkerGroup& g, grpc::ClientContext* ctx, auto done) {
        g.stub()->async()->UnloadAdapter(ctx, &req, &resps[i], std::move(done));
      });
  size_t unloaded = 0;
  std::vector<std::string> failed;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (statuses[i].ok()) {
      ++unloaded;
    } else if (statuses[i].error_code() != grpc::StatusCode::NOT_FOUND) {
      failed.emplace_back(GroupError(*pool_, *groups[i], statuses[i]).message());
    }
  }
  pool_->RefreshNow();
  if (!failed.empty()) {
    PHI_LOG(WARNING, "lora_unload_failed").Str("adapter", name).Str("error", absl::StrJoin(failed, "; "));
    return absl::UnavailableError(absl::StrCat("unloaded the adapter '", name, "' from ", unloaded,
                                               " groups; these keep it (unload again once they answer): ",
                                               absl::StrJoin(failed, "; ")));
  }
  if (unloaded == 0 && !was_loaded) {
    return absl::NotFoundError(absl::StrCat("lora_name: no adapter '", name, "' is loaded"));
  }
  PHI_LOG(INFO, "lora_unloaded").Str("adapter", name).Int("groups", static_cast<int64_t>(unloaded));
  return absl::OkStatus();
}

void LoraAdmin::Reconcile() {
  std::map<std::string, std::string> wanted;
  {
    std::lock_guard<std::mutex> l(mu_);
    reconcile_posted_ = false;
    wanted = loaded_;
  }
  const auto now = std::chrono::steady_clock::now();
  for (auto& g : ReadyGroups(pool_)) {
    for (const auto& [name, path] : wanted) {
      if (g->HasAdapter(name)) continue;
      auto key = std::make_pair(g->address(), name);
      if (auto it = retry_at_.find(key); it != retry_at_.end() && now < it->second) continue;
      {
        // Unloaded meanwhile (an Unload posted behind this task has not run yet, but the
        // client may have asked before the round): check again.
        std::lock_guard<std::mutex> l(mu_);
        if (!loaded_.contains(name)) continue;
      }
      phi::v1::LoadAdapterRequest req;
      req.set_name(name);
      req.set_path(path);
      phi::v1::LoadAdapterResponse resp;
      const std::vector<grpc::Status> s =
          CallEach({g}, options_.call_timeout_seconds, [&](size_t, WorkerGroup& w, grpc::ClientContext* ctx, auto done) {
            w.stub()->async()->LoadAdapter(ctx, &req, &resp, std::move(done));
          });
      if (s[0].ok() || s[0].error_code() == grpc::StatusCode::ALREADY_EXISTS) {
        retry_at_.erase(key);
        PHI_LOG(INFO, "lora_reconciled").Str("adapter", name).Str("address", g->address());
      } else {
        retry_at_[key] = now + std::chrono::milliseconds(static_cast<int64_t>(options_.reconcile_retry_seconds * 1000));
        PHI_LOG(WARNING, "lora_reconcile_failed")
            .Str("adapter", name)
            .Str("address", g->address())
            .Str("error", s[0].error_message());
      }
    }
  }
}

}  // namespace phi::gateway
