// The engine's LoRA adapters: the registry (name -> adapter) and the assignment of adapters
// to the runner's slots (ModelRunner::max_adapter_slots, SetAdapter). Thread-safe.
//
// A request holds a reference on its adapter's slot from Submit (Acquire, on the caller's
// thread) to its end (Release, on the engine thread); a preempted request keeps it. Acquire
// reuses the slot its adapter is assigned to, else takes a free slot, else evicts the least
// recently used slot that no request holds; when every slot is held by other adapters in use
// it answers RESOURCE_EXHAUSTED. The engine thread alone talks to the runner: between steps it
// takes the Work (slots to install or empty, cached KV chains to forget) and reports each
// SetAdapter back through Installed.
#ifndef PHI_SERVICES_WORKER_ENGINE_ADAPTER_SLOTS_H_
#define PHI_SERVICES_WORKER_ENGINE_ADAPTER_SLOTS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/engine/engine_metrics.h"

namespace phi::worker {

namespace lora {
struct LoraAdapter;
}

// A registered LoRA adapter as Engine::Adapters() reports it.
struct AdapterInfo {
  std::string name;
  std::string path;
  std::string base_model;  // adapter_config.json base_model_name_or_path (may be empty)
  int32_t rank = 0;
  std::vector<std::string> target_modules;  // PEFT names, in LoraModule order
  bool resident = false;   // installed in one of the runner's slots
  int32_t requests = 0;    // waiting or running requests that use it
};

class AdapterSlots {
 public:
  // `metrics` (the adapter-labelled series and the lora gauges) must outlive it.
  AdapterSlots(int32_t num_slots, int32_t max_adapters, EngineMetrics* metrics);

  int32_t num_slots() const { return num_slots_; }

  // Registers `adapter` under adapter->name. INVALID_ARGUMENT: a name that is not 1 to 128
  // bytes of [A-Za-z0-9._-]; ALREADY_EXISTS: the name is loaded, or was unloaded while requests
  // still use it (their KV blocks are cached under the name until they end);
  // RESOURCE_EXHAUSTED: max_adapters are loaded; FAILED_PRECONDITION: no slots.
  absl::Status Add(std::shared_ptr<const lora::LoraAdapter> adapter);
  // Unregisters; requests holding it keep it, and its slot empties with the last of them.
  // NOT_FOUND when no adapter has that name.
  absl::Status Remove(const std::string& name);
  std::vector<AdapterInfo> List() const;  // by name

  struct Hold {
    int32_t slot = 0;                          // 1-based: SequenceStep::adapter_slot
    const AdapterMetrics* metrics = nullptr;   // the adapter's labelled series
  };
  // One more request of adapter `name`. NOT_FOUND (naming the loaded adapters) or
  // RESOURCE_EXHAUSTED (naming --max-loras and the adapters holding the slots).
  absl::StatusOr<Hold> Acquire(const std::string& name);
  // Gives a request's reference back. True when the engine thread has work (an unloaded
  // adapter's last request ended).
  bool Release(int32_t slot);

  // Engine thread, between steps.
  struct Work {
    std::vector<uint64_t> forget_roots;  // common::PrefixHashRoot of adapters unloaded for good
    // (slot, adapter) to SetAdapter; adapter null: empty the slot.
    std::vector<std::pair<int32_t, std::shared_ptr<const lora::LoraAdapter>>> installs;
  };
  Work TakeWork();
  // What the runner now holds in `slot` after SetAdapter(slot, adapter): `adapter` when it
  // succeeded, nothing when it failed (the slot stays assigned but is installed again only
  // when a request needs it).
  void Installed(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter, bool ok);

 private:
  struct Registered {
    std::shared_ptr<const lora::LoraAdapter> adapter;
    const AdapterMetrics* metrics = nullptr;
  };
  struct Slot {
    std::shared_ptr<const lora::LoraAdapter> adapter;    // assigned (null: free)
    std::shared_ptr<const lora::LoraAdapter> installed;  // what the runner holds
    int32_t requests = 0;                                // requests holding it
    uint64_t last_used = 0;                              // clock_ at its last acquire or release
  };
  std::string UnknownLocked(const std::string& name) const;  // NOT_FOUND's message
  int32_t ChooseSlotLocked(const std::shared_ptr<const lora::LoraAdapter>& adapter) const;  // -1: none
  bool IsLoadedLocked(const std::shared_ptr<const lora::LoraAdapter>& adapter) const;

  const int32_t num_slots_;
  const int32_t max_adapters_;
  EngineMetrics* const metrics_;

  mutable std::mutex mu_;
  std::map<std::string, Registered> adapters_;
  std::vector<Slot> slots_;  // slot i is slots_[i - 1]
  uint64_t clock_ = 0;
  std::vector<uint64_t> forget_roots_;
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_ADAPTER_SLOTS_H_
