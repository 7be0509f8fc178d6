// The engine's Prometheus metrics (names are what monitoring/ dashboards and alerts use).
// Children are looked up once here so the step loop touches only atomics.
#ifndef PHI_SERVICES_WORKER_ENGINE_ENGINE_METRICS_H_
#define PHI_SERVICES_WORKER_ENGINE_ENGINE_METRICS_H_

#include "services/common/metrics/registry.h"
#include "services/worker/engine/request.h"

namespace phi::worker {

struct EngineMetrics {
  explicit EngineMetrics(metrics::Registry& registry);

  metrics::Counter& RequestsFinished(FinishReason reason);

  metrics::Family<metrics::Counter>* requests_total;
  metrics::Histogram& queue_time;
  metrics::Histogram& time_to_first_token;
  metrics::Histogram& inter_token_latency;
  metrics::Histogram& e2e_latency;
  metrics::Histogram& step_duration;
  metrics::Histogram& batch_size;
  metrics::Counter& prompt_tokens;
  metrics::Counter& prefill_tokens;
  metrics::Histogram& mask_wait;
  metrics::Counter& generated_tokens;
  metrics::Counter& cached_prompt_tokens;
  metrics::Counter& prefix_cache_queries;
  metrics::Counter& prefix_cache_hits;
  metrics::Counter& preemptions;
  metrics::Gauge& requests_waiting;
  metrics::Gauge& requests_running;
  metrics::Gauge& kv_blocks_used;
  metrics::Gauge& kv_blocks_capacity;
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_ENGINE_METRICS_H_
