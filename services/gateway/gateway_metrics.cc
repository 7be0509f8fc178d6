#include "services/gateway/gateway_metrics.h"

namespace phi::gateway {

GatewayMetrics::GatewayMetrics(metrics::Registry* r) {
  requests = &r->AddCounter("phi_gateway_requests_total", "Requests by route, final gRPC code and model",
                            {"route", "code", "model"});
  ttft = &r->AddHistogram("phi_gateway_time_to_first_token_seconds",
                          "From request arrival to the first generated token", {"model"}, metrics::LatencyBuckets());
  inter_token = &r->AddHistogram("phi_gateway_inter_token_latency_seconds", "Between consecutive tokens of a stream",
                                 {"model"}, metrics::ExponentialBuckets(0.0005, 2, 16));
  e2e = &r->AddHistogram("phi_gateway_e2e_latency_seconds", "From request arrival to its end", {"model"},
                         metrics::LatencyBuckets());
  tokenizer = &r->AddHistogram("phi_gateway_tokenizer_duration_seconds", "Encode calls to the tokenizer service", {},
                               metrics::ExponentialBuckets(0.0001, 2, 16))
                   .Get();
  prompt_tokens = &r->AddCounter("phi_gateway_prompt_tokens_total", "Prompt tokens after templating", {"model"});
  completion_tokens = &r->AddCounter("phi_gateway_completion_tokens_total", "Tokens generated", {"model"});
  in_flight = &r->AddGauge("phi_gateway_requests_in_flight", "Generation requests being served").Get();
  hung_attempts = &r->AddCounter("phi_gateway_worker_hung_attempts_total",
                                 "Worker attempts cancelled for no token within --first-token-timeout-seconds")
                       .Get();
}

ModelMetrics GatewayMetrics::ForModel(const std::string& model) {
  return {&ttft->WithLabels({model}), &inter_token->WithLabels({model}), &e2e->WithLabels({model}),
          &prompt_tokens->WithLabels({model}), &completion_tokens->WithLabels({model})};
}

}  // namespace phi::gateway
