// Prints an exposition with every metric type, awkward label values and the
// process metrics, for `promtool check metrics` (see CMakeLists.txt).
#include <cstdio>

#include "services/common/metrics/process_metrics.h"
#include "services/common/metrics/registry.h"

int main() {
  phi::metrics::Registry r;
  phi::metrics::RegisterProcessMetrics(r);
  auto& c = r.AddCounter("phi_dump_requests_total", "Requests, with \"quotes\" and \\ in help.", {"method", "code"});
  c.WithLabels({"Encode", "OK"}).Inc(3);
  c.WithLabels({"we\"ird\\la\nbel", "INTERNAL"}).Inc();
  r.AddGauge("phi_dump_in_flight", "In flight.").Get().Set(2);
  auto& h = r.AddHistogram("phi_dump_latency_seconds", "Latency.", {"route"}, phi::metrics::LatencyBuckets());
  h.WithLabels({"chat"}).Observe(0.003);
  h.WithLabels({"chat"}).Observe(7);
  h.WithLabels({"models"}).Observe(0.0001);
  std::fputs(r.Serialize().c_str(), stdout);
  return 0;
}
