// The gateway's Prometheus metrics. Names are a contract with monitoring/
// (dashboards and recording rules use exactly these; labels: monitoring/metrics.yml).
#ifndef PHI_SERVICES_GATEWAY_GATEWAY_METRICS_H_
#define PHI_SERVICES_GATEWAY_GATEWAY_METRICS_H_

#include <string>

#include "services/common/metrics/registry.h"

namespace phi::gateway {

// One model's series of the per-request metrics. `model` is a served name (a base model or a
// LoRA adapter, as the request resolved it), never a client's unchecked text: the label's
// values are bounded by what the workers serve.
struct ModelMetrics {
  metrics::Histogram* ttft = nullptr;
  metrics::Histogram* inter_token = nullptr;
  metrics::Histogram* e2e = nullptr;
  metrics::Counter* prompt_tokens = nullptr;
  metrics::Counter* completion_tokens = nullptr;
};

struct GatewayMetrics {
  explicit GatewayMetrics(metrics::Registry* registry);

  // route: chat, chat_stream, complete, complete_stream, list_models,
  // http_chat, http_completions, ...; code: the gRPC code name; model: the served model the
  // request resolved to, "" when it named none that is served (or was refused before).
  void CountRequest(const std::string& route, const std::string& code, const std::string& model = "") {
    requests->WithLabels({route, code, model}).Inc();
  }
  // The series of `model` (a served name: see ModelMetrics).
  ModelMetrics ForModel(const std::string& model);

  metrics::Family<metrics::Counter>* requests;
  metrics::Family<metrics::Histogram>* ttft;
  metrics::Family<metrics::Histogram>* inter_token;
  metrics::Family<metrics::Histogram>* e2e;
  metrics::Histogram* tokenizer;
  metrics::Family<metrics::Counter>* prompt_tokens;
  metrics::Family<metrics::Counter>* completion_tokens;
  metrics::Gauge* in_flight;
  // Worker attempts cancelled by --first-token-timeout-seconds.
  metrics::Counter* hung_attempts;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_GATEWAY_METRICS_H_
