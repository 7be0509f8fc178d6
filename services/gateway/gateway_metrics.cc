#include "services/gateway/gateway_metrics.h"

namespace phi::gateway {

GatewayMetrics::GatewayMetrics(metrics::Registry* r) {
  requests = &r->AddCounter("phi_gateway_requests_total", "Requests by route and final gRPC code", {"route", "code"});
  ttft = &r->AddHistogram("phi_gateway_time_to_first_token_seconds",
                          "From request arrival to the first generated token", {}, metrics::LatencyBuckets())
              .Get();
  inter_token = &r->AddHistogram("phi_gateway_inter_token_latency_seconds", "Between consecutive tokens of a stream",
                                 {}, metrics::ExponentialBuckets(0.0005, 2, 16))
                     .Get();
  e2e = &r->AddHistogram("phi_gateway_e2e_latency_seconds", "From request arrival to its end", {},
                         metrics::LatencyBuckets())
             .Get();
  tokenizer = &r->AddHistogram("phi_gateway_tokenizer_duration_seconds", "Encode calls to the tokenizer service", {},
                               metrics::ExponentialBuckets(0.0001, 2, 16))
                   .Get();
  prompt_tokens = &r->AddCounter("phi_gateway_prompt_tokens_total", "Prompt tokens after templating").Get();
  completion_tokens = &r->AddCounter("phi_gateway_completion_tokens_total", "Tokens generated").Get();
  in_flight = &r->AddGauge("phi_gateway_requests_in_flight", "Generation requests being served").Get();
  hung_attempts = &r->AddCounter("phi_gateway_worker_hung_attempts_total",
                                 "Worker attempts cancelled for no token within --first-token-timeout-seconds")
                       .Get();
}

}  // namespace phi::gateway
