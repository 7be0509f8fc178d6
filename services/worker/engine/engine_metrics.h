// The engine's Prometheus metrics (names are what monitoring/ dashboards and alerts use).
// Children are looked up once here so the step loop touches only atomics.
#ifndef PHI_SERVICES_WORKER_ENGINE_ENGINE_METRICS_H_
#define PHI_SERVICES_WORKER_ENGINE_ENGINE_METRICS_H_

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "services/common/metrics/registry.h"
#include "services/worker/engine/request.h"

namespace phi::worker {

// One adapter's series of the metrics labelled `adapter`: the LoRA adapter's name, "" for the
// base model (written without the label: Prometheus stores an empty label as none, so the
// base model's series keep their names and `{adapter=""}` selects them).
struct AdapterMetrics {
  std::array<metrics::Counter*, static_cast<size_t>(FinishReason::kError) + 1> finished{};  // by reason
  metrics::Counter* generated_tokens = nullptr;
};

struct EngineMetrics {
  // Adapter names that get series of their own during the process's life; later new names
  // share the series of kOtherAdapterLabel (adapters come and go over load/unload, series
  // never leave the registry: the label's values stay bounded).
  EngineMetrics(metrics::Registry& registry, int32_t max_adapter_labels);

  // "(other)": not a valid adapter name ([A-Za-z0-9._-]), so never mistaken for one.
  static constexpr const char* kOtherAdapterLabel = "(other)";
  // The series of `adapter` ("" for the base model), created on first use. Thread-safe; the
  // result lives as long as the registry.
  const AdapterMetrics* ForAdapter(const std::string& adapter);

  metrics::Family<metrics::Counter>* requests_total;
  metrics::Family<metrics::Counter>* generated_tokens_total;
  metrics::Histogram& queue_time;
  metrics::Histogram& time_to_first_token;
  metrics::Histogram& inter_token_latency;
  metrics::Histogram& e2e_latency;
  metrics::Histogram& step_duration;
  metrics::Histogram& batch_size;
  metrics::Counter& prompt_tokens;
  metrics::Counter& prefill_tokens;
  metrics::Histogram& mask_wait;
  metrics::Counter& cached_prompt_tokens;
  metrics::Counter& prefix_cache_queries;
  metrics::Counter& prefix_cache_hits;
  metrics::Counter& preemptions;
  metrics::Gauge& requests_waiting;
  metrics::Gauge& requests_running;
  metrics::Gauge& kv_blocks_used;
  metrics::Gauge& kv_blocks_capacity;
  metrics::Gauge& lora_slots_capacity;
  metrics::Gauge& lora_slots_busy;
  metrics::Gauge& lora_adapters_registered;
  metrics::Counter& lora_slot_installs;

 private:
  const size_t max_adapter_labels_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<AdapterMetrics>> by_adapter_;  // under mu_
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_ENGINE_METRICS_H_
