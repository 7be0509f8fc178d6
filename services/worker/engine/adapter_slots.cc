#include "services/worker/engine/adapter_slots.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/logging.h"
#include "services/common/prefix_hash.h"
#include "services/worker/lora/lora_adapter.h"

namespace phi::worker {
namespace {

// Adapter names (worker.proto's AdapterInfo.name): 1 to 128 bytes of [A-Za-z0-9._-].
constexpr size_t kMaxNameBytes = 128;
// Names listed in one error message at most.
constexpr size_t kMaxNamesInMessage = 8;

bool IsAdapterName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

// A client-chosen name in a message: quoted, escaped, cut at kMaxNameBytes.
std::string Quoted(const std::string& name) {
  if (name.size() <= kMaxNameBytes) return absl::StrCat("'", absl::CEscape(name), "'");
  return absl::StrCat("'", absl::CEscape(name.substr(0, kMaxNameBytes)), "...'");
}

// "a, b, c", or "a, b, ..., h and 5 more".
std::string NameList(const std::vector<std::string>& names) {
  if (names.size() <= kMaxNamesInMessage) return absl::StrJoin(names, ", ");
  const std::vector<std::string> shown(names.begin(), names.begin() + kMaxNamesInMessage);
  return absl::StrCat(absl::StrJoin(shown, ", "), " and ", names.size() - kMaxNamesInMessage, " more");
}

}  // namespace

AdapterSlots::AdapterSlots(int32_t num_slots, int32_t max_adapters, EngineMetrics* metrics)
    : num_slots_(std::max(0, num_slots)), max_adapters_(max_adapters), metrics_(metrics),
      slots_(static_cast<size_t>(num_slots_)) {
  metrics_->lora_slots_capacity.Set(num_slots_);
  metrics_->lora_slots_busy.Set(0);
  metrics_->lora_adapters_registered.Set(0);
}

absl::Status AdapterSlots::Add(std::shared_ptr<const lora::LoraAdapter> adapter) {
  if (adapter == nullptr) return absl::InvalidArgumentError("adapter: null");
  if (num_slots_ == 0) {
    return absl::FailedPreconditionError(
        "this worker serves no LoRA adapters: its runner has no adapter slots (--max-loras 0, or a backend "
        "without adapter support)");
  }
  const std::string name = adapter->name;
  if (!IsAdapterName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter name ", Quoted(name), ": must be 1 to ", kMaxNameBytes, " bytes of [A-Za-z0-9._-]"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = adapters_.find(name); it != adapters_.end()) {
    return absl::AlreadyExistsError(
        absl::StrCat("adapter '", name, "' is already loaded (from ", it->second.adapter->path, "); unload it first"));
  }
  for (const Slot& slot : slots_) {
    // An unloaded adapter of that name still serving requests: its KV blocks are cached under
    // the name's chain root until its last request ends, so a new adapter of that name waits.
    if (slot.adapter != nullptr && slot.adapter->name == name && slot.requests > 0) {
      return absl::AlreadyExistsError(absl::StrCat("adapter '", name, "' was unloaded but ", slot.requests,
                                                   " requests still use it; load it again when they end"));
    }
  }
  if (static_cast<int32_t>(adapters_.size()) >= max_adapters_) {
    return absl::ResourceExhaustedError(absl::StrCat(adapters_.size(),
                                                     " LoRA adapters are loaded, the most that --max-lora-adapters (",
                                                     max_adapters_, ") allows; unload one first"));
  }
  const AdapterMetrics* series = metrics_->ForAdapter(name);
  adapters_.emplace(name, Registered{std::move(adapter), series});
  metrics_->lora_adapters_registered.Set(static_cast<double>(adapters_.size()));
  return absl::OkStatus();
}

absl::Status AdapterSlots::Remove(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = adapters_.find(name);
  if (it == adapters_.end()) return absl::NotFoundError(UnknownLocked(name));
  const std::shared_ptr<const lora::LoraAdapter> adapter = std::move(it->second.adapter);
  adapters_.erase(it);
  metrics_->lora_adapters_registered.Set(static_cast<double>(adapters_.size()));
  auto slot = std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.adapter == adapter; });
  if (slot != slots_.end() && slot->requests > 0) return absl::OkStatus();  // emptied with its last request
  if (slot != slots_.end()) slot->adapter = nullptr;
  forget_roots_.push_back(common::PrefixHashRoot(name));
  return absl::OkStatus();
}

std::vector<AdapterInfo> AdapterSlots::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<AdapterInfo> out;
  out.reserve(adapters_.size());
  for (const auto& [name, registered] : adapters_) {
    const lora::LoraAdapter& a = *registered.adapter;
    AdapterInfo info;
    info.name = name;
    info.path = a.path;
    info.base_model = a.base_model;
    info.rank = a.rank;
    for (int m = 0; m < lora::kNumLoraModules; ++m) {
      const auto module = static_cast<lora::LoraModule>(m);
      if (a.targets(module)) info.target_modules.emplace_back(lora::LoraModuleName(module));
    }
    for (const Slot& slot : slots_) {
      if (slot.adapter != registered.adapter) continue;
      info.resident = slot.installed == slot.adapter;
      info.requests = slot.requests;
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::string AdapterSlots::UnknownLocked(const std::string& name) const {
  if (num_slots_ == 0) {
    return absl::StrCat("adapter ", Quoted(name),
                        " is not loaded: this worker serves no LoRA adapters (--max-loras 0)");
  }
  if (adapters_.empty()) return absl::StrCat("adapter ", Quoted(name), " is not loaded: no LoRA adapter is loaded");
  std::vector<std::string> names;
  names.reserve(adapters_.size());
  for (const auto& entry : adapters_) names.push_back(entry.first);
  return absl::StrCat("adapter ", Quoted(name), " is not loaded; loaded: ", NameList(names));
}

int32_t AdapterSlots::ChooseSlotLocked(const std::shared_ptr<const lora::LoraAdapter>& adapter) const {
  for (int32_t i = 0; i < num_slots_; ++i) {
    if (slots_[i].adapter == adapter) return i;  // resident, or being installed
  }
  // A free slot, else the least recently used one that no request holds.
  int32_t best = -1;
  for (int32_t i = 0; i < num_slots_; ++i) {
    const Slot& s = slots_[i];
    if (s.requests > 0) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const Slot& b = slots_[best];
    const bool better = (s.adapter == nullptr) != (b.adapter == nullptr) ? s.adapter == nullptr
                                                                         : s.last_used < b.last_used;
    if (better) best = i;
  }
  return best;
}

bool AdapterSlots::IsLoadedLocked(const std::shared_ptr<const lora::LoraAdapter>& adapter) const {
  auto it = adapters_.find(adapter->name);
  return it != adapters_.end() && it->second.adapter == adapter;
}

absl::StatusOr<AdapterSlots::Hold> AdapterSlots::Acquire(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = adapters_.find(name);
  if (it == adapters_.end()) return absl::NotFoundError(UnknownLocked(name));
  const std::shared_ptr<const lora::LoraAdapter>& adapter = it->second.adapter;
  const int32_t i = ChooseSlotLocked(adapter);
  if (i < 0) {
    std::vector<std::string> holders;
    for (const Slot& s : slots_) holders.push_back(s.adapter->name);
    return absl::ResourceExhaustedError(absl::StrCat(
        "every LoRA adapter slot (--max-loras ", num_slots_, ") is held by other adapters' waiting or running "
        "requests (", NameList(holders), "); adapter '", name,
        "' needs one of them idle: retry later, or raise --max-loras"));
  }
  Slot& slot = slots_[i];
  if (slot.adapter != adapter) {
    if (slot.adapter != nullptr) {
      PHI_LOG(DEBUG, "lora_slot_evicted").Str("adapter", slot.adapter->name).Int("slot", i + 1).Str("for", name);
    }
    slot.adapter = adapter;  // the engine thread installs it before the request's first step
  }
  if (slot.requests++ == 0) metrics_->lora_slots_busy.Inc();
  slot.last_used = ++clock_;
  return Hold{i + 1, it->second.metrics};
}

bool AdapterSlots::Release(int32_t slot_number) {
  std::lock_guard<std::mutex> lock(mu_);
  Slot& slot = slots_[slot_number - 1];
  slot.last_used = ++clock_;
  if (--slot.requests > 0) return false;
  metrics_->lora_slots_busy.Dec();
  if (slot.adapter == nullptr || IsLoadedLocked(slot.adapter)) return false;  // stays resident
  // Unloaded while in use, and its last request is gone.
  forget_roots_.push_back(common::PrefixHashRoot(slot.adapter->name));
  slot.adapter = nullptr;
  return true;
}

AdapterSlots::Work AdapterSlots::TakeWork() {
  std::lock_guard<std::mutex> lock(mu_);
  Work work;
  work.forget_roots.swap(forget_roots_);
  for (int32_t i = 0; i < num_slots_; ++i) {
    const Slot& s = slots_[i];
    if (s.adapter == s.installed) continue;
    if (s.adapter != nullptr && s.requests == 0) continue;  // nobody needs it yet
    work.installs.emplace_back(i + 1, s.adapter);
  }
  return work;
}

void AdapterSlots::Installed(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter, bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  slots_[slot - 1].installed = ok ? std::move(adapter) : nullptr;
}

}  // namespace phi::worker
