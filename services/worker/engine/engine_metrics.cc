#include "services/worker/engine/engine_metrics.h"

namespace phi::worker {

EngineMetrics::EngineMetrics(metrics::Registry& r)
    : requests_total(&r.AddCounter("phi_worker_requests_total",
                                   "Generation requests finished, by finish reason.", {"finish_reason"})),
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
      generated_tokens(r.AddCounter("phi_worker_generated_tokens_total", "Tokens generated.").Get()),
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
      kv_blocks_capacity(r.AddGauge("phi_worker_kv_blocks_capacity", "KV cache blocks in the pool.").Get()) {
  for (FinishReason reason : {FinishReason::kStop, FinishReason::kLength, FinishReason::kCancelled,
                              FinishReason::kContextLength, FinishReason::kError}) {
    RequestsFinished(reason);  // export zeros, so rate() works from the first request
  }
}

metrics::Counter& EngineMetrics::RequestsFinished(FinishReason reason) {
  return requests_total->WithLabels({FinishReasonName(reason)});
}

}  // namespace phi::worker
