#include "services/worker/engine/engine_metrics.h"

#include <algorithm>

namespace phi::worker {

EngineMetrics::EngineMetrics(metrics::Registry& r, int32_t max_adapter_labels)
    : requests_total(&r.AddCounter("phi_worker_requests_total",
                                   "Generation requests finished, by finish reason and LoRA adapter "
                                   "(adapter name; no adapter label: the base model).",
                                   {"finish_reason", "adapter"})),
      generated_tokens_total(&r.AddCounter("phi_worker_generated_tokens_total",
                                           "Tokens generated, by LoRA adapter (adapter name; no adapter "
                                           "label: the base model).",
                                           {"adapter"})),
      queue_time(r.AddHistogram("phi_worker_queue_time_seconds",
                                "Time from arrival to a request's first scheduled step.", {},
                                metrics::LatencyBuckets())
                     .Get()),
      time_to_first_token(r.AddHistogram("phi_worker_time_to_first_token_seconds",
                                         "Time from arrival to the first generated token.", {},
                                         metrics::LatencyBuckets())
                              .Get()),
      inter_token_latency(r.AddHistogram("phi_worker_inter_token_latency_seconds",
                                         "Time between consecutive generated tokens of a request.", {},
                                         metrics::LatencyBuckets())
                              .Get()),
      e2e_latency(r.AddHistogram("phi_worker_e2e_latency_seconds",
                                 "Time from arrival to the end of a request.", {},
                                 metrics::LatencyBuckets())
                      .Get()),
      step_duration(r.AddHistogram("phi_worker_step_duration_seconds",
                                   "Duration of one engine step (schedule, forward pass, sampling).", {},
                                   metrics::LatencyBuckets())
                        .Get()),
      batch_size(r.AddHistogram("phi_worker_batch_size", "Sequences in one engine step.", {},
                                metrics::ExponentialBuckets(1, 2, 10))
                     .Get()),
      prompt_tokens(r.AddCounter("phi_worker_prompt_tokens_total", "Prompt tokens of admitted requests.").Get()),
      prefill_tokens(r.AddCounter("phi_worker_prefill_tokens_total",
                                  "Tokens computed by prefill (prompt tokens not found in the prefix cache, "
                                  "and whole histories recomputed after a preemption).")
                         .Get()),
      mask_wait(r.AddHistogram("phi_worker_grammar_mask_wait_seconds",
                               "Time a step with constrained sequences waited for their token masks after "
                               "the forward pass (0 when the masks were ready first).",
                               {}, metrics::LatencyBuckets())
                    .Get()),
      cached_prompt_tokens(r.AddCounter("phi_worker_cached_prompt_tokens_total",
                                        "Prompt tokens whose KV came from the prefix cache.")
                               .Get()),
      prefix_cache_queries(r.AddCounter("phi_worker_prefix_cache_queries_total",
                                        "Full prompt blocks looked up in the prefix cache.")
                               .Get()),
      prefix_cache_hits(r.AddCounter("phi_worker_prefix_cache_hits_total",
                                     "Full prompt blocks found in the prefix cache.")
                            .Get()),
      preemptions(r.AddCounter("phi_worker_preemptions_total",
                               "Running requests preempted (blocks given back, recomputed later).")
                      .Get()),
      requests_waiting(r.AddGauge("phi_worker_requests_waiting", "Requests queued, not running.").Get()),
      requests_running(r.AddGauge("phi_worker_requests_running", "Requests in the running batch.").Get()),
      kv_blocks_used(r.AddGauge("phi_worker_kv_blocks_used", "KV cache blocks held by requests.").Get()),
      // A gauge: promtool reserves the _total suffix for counters.
      kv_blocks_capacity(r.AddGauge("phi_worker_kv_blocks_capacity", "KV cache blocks in the pool.").Get()),
      lora_slots_capacity(r.AddGauge("phi_worker_lora_slots_capacity",
                                     "LoRA adapter slots of the runner (--max-loras): adapters in use at once.")
                              .Get()),
      lora_slots_busy(r.AddGauge("phi_worker_lora_slots_busy",
                                 "LoRA adapter slots held by an adapter with waiting or running requests; at "
                                 "capacity, requests for any other adapter get RESOURCE_EXHAUSTED.")
                          .Get()),
      lora_adapters_registered(r.AddGauge("phi_worker_lora_adapters_registered",
                                          "LoRA adapters loaded (--lora, LoadAdapter), resident in a slot or not.")
                                   .Get()),
      lora_slot_installs(r.AddCounter("phi_worker_lora_slot_installs_total",
                                      "LoRA adapters installed into a runner slot because a request needed one "
                                      "that was not resident (evicting an idle one when no slot was free).")
                             .Get()),
      max_adapter_labels_(static_cast<size_t>(std::max(0, max_adapter_labels))) {
  ForAdapter("");  // export the base model's zeros, so rate() works from the first request
}

const AdapterMetrics* EngineMetrics::ForAdapter(const std::string& adapter) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_adapter_.find(adapter);
  if (it != by_adapter_.end()) return it->second.get();
  const size_t adapters = by_adapter_.size() - by_adapter_.count("") - by_adapter_.count(kOtherAdapterLabel);
  const std::string label = adapter.empty() || adapters < max_adapter_labels_ ? adapter : kOtherAdapterLabel;
  if (label != adapter) {
    it = by_adapter_.find(label);
    if (it != by_adapter_.end()) return it->second.get();
  }
  auto m = std::make_unique<AdapterMetrics>();
  for (FinishReason reason : {FinishReason::kStop, FinishReason::kLength, FinishReason::kCancelled,
                              FinishReason::kContextLength, FinishReason::kError}) {
    m->finished[static_cast<size_t>(reason)] = &requests_total->WithLabels({FinishReasonName(reason), label});
  }
  m->generated_tokens = &generated_tokens_total->WithLabels({label});
  return by_adapter_.emplace(label, std::move(m)).first->second.get();
}

}  // namespace phi::worker
