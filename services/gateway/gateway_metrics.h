// The gateway's Prometheus metrics. Names are a contract with monitoring/
// (dashboards and recording rules use exactly these).
#ifndef PHI_SERVICES_GATEWAY_GATEWAY_METRICS_H_
#define PHI_SERVICES_GATEWAY_GATEWAY_METRICS_H_

#include <string>

#include "services/common/metrics/registry.h"

namespace phi::gateway {

struct GatewayMetrics {
  explicit GatewayMetrics(metrics::Registry* registry);

  // route: chat, chat_stream, complete, complete_stream, list_models,
  // http_chat, http_completions, ...; code: the gRPC code name.
  void CountRequest(const std::string& route, const std::string& code) {
    requests->WithLabels({route, code}).Inc();
  }

  metrics::Family<metrics::Counter>* requests;
  metrics::Histogram* ttft;
  metrics::Histogram* inter_token;
  metrics::Histogram* e2e;
  metrics::Histogram* tokenizer;
  metrics::Counter* prompt_tokens;
  metrics::Counter* completion_tokens;
  metrics::Gauge* in_flight;
  // Worker attempts cancelled by --first-token-timeout-seconds.
  metrics::Counter* hung_attempts;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_GATEWAY_METRICS_H_
