// process_* metrics from /proc/self, refreshed at every scrape.
#ifndef PHI_SERVICES_COMMON_METRICS_PROCESS_METRICS_H_
#define PHI_SERVICES_COMMON_METRICS_PROCESS_METRICS_H_

#include "services/common/metrics/registry.h"

namespace phi::metrics {

// Registers process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_start_time_seconds, process_open_fds and
// process_max_fds in `registry`. Call once per registry.
void RegisterProcessMetrics(Registry& registry);

}  // namespace phi::metrics

#endif  // PHI_SERVICES_COMMON_METRICS_PROCESS_METRICS_H_
