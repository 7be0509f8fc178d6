// A small Prometheus client: counters, gauges and histograms with labels, and
// the text exposition format 0.0.4.
//
// Hot path: a metric child (one label combination) is a handful of atomics, so
// Inc/Set/Observe take no lock. Looking a child up by label values takes the
// family's own mutex; callers on hot paths look children up once and keep the
// reference (children live as long as the registry).
// ref: https://prometheus.io/docs/instrumenting/exposition_formats/
#ifndef PHI_SERVICES_COMMON_METRICS_REGISTRY_H_
#define PHI_SERVICES_COMMON_METRICS_REGISTRY_H_

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace phi::metrics {

class Counter {
 public:
  // Adds `v` (>= 0; negative values are ignored: counters never go down).
  void Inc(double v = 1.0) {
    if (v > 0) value_.fetch_add(v, std::memory_order_relaxed);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }
  // For collectors that mirror a total kept elsewhere (e.g. CPU time in /proc).
  void SetTotal(double v) { value_.store(v, std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Dec(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `upper_bounds` strictly increasing and finite; the +Inf bucket is implicit.
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double v);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> bucket_counts_;  // non-cumulative, +Inf last
  std::atomic<double> sum_{0.0};
  std::atomic<uint64_t> count_{0};
};

// Default latency buckets in seconds: 0.5 ms .. 60 s.
std::vector<double> LatencyBuckets();
// `count` buckets start, start*factor, ...
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// `count` buckets start, start+width, ...
std::vector<double> LinearBuckets(double start, double width, int count);

enum class MetricType { kCounter, kGauge, kHistogram };

// All children of one metric name, keyed by label values.
template <typename T>
class Family {
 public:
  using Factory = std::function<std::unique_ptr<T>()>;
  Family(std::string name, std::string help, std::vector<std::string> label_names, Factory factory)
      : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)),
        factory_(std::move(factory)) {}

  // The child for these label values (one per label name, in order), created on
  // first use. Aborts on a wrong number of values: that is a programming error.
  T& WithLabels(const std::vector<std::string>& values);
  // Shorthand for a family without labels.
  T& Get() { return WithLabels({}); }

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Calls fn(label_values, child) for every child, in label order.
  void ForEach(const std::function<void(const std::vector<std::string>&, const T&)>& fn) const;

 private:
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  Factory factory_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registering a name twice with the same type and labels returns the first
  // family; a clash (other type or labels) or an invalid name aborts.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> upper_bounds);

  // A hook run at the start of every Serialize (e.g. to refresh process gauges).
  void AddCollector(std::function<void()> collect);

  // Text exposition format 0.0.4, families in name order.
  std::string Serialize() const;

 private:
  struct Entry {
    MetricType type;
    std::unique_ptr<Family<Counter>> counter;
    std::unique_ptr<Family<Gauge>> gauge;
    std::unique_ptr<Family<Histogram>> histogram;
  };
  Entry& FindOrAdd(const std::string& name, MetricType type, const std::vector<std::string>& labels);

  mutable std::mutex mu_;
  std::map<std::string, Entry> families_;
  std::vector<std::function<void()>> collectors_;
};

// The process-wide registry every service exports on /metrics.
Registry& DefaultRegistry();

// Escaping rules of the text format (exposed for tests).
std::string EscapeLabelValue(const std::string& v);
std::string EscapeHelp(const std::string& v);
std::string FormatValue(double v);
bool IsValidMetricName(const std::string& name);
bool IsValidLabelName(const std::string& name);

// ---- template definitions ----

template <typename T>
T& Family<T>::WithLabels(const std::vector<std::string>& values) {
  if (values.size() != label_names_.size()) {
    std::fprintf(stderr, "metric %s: %zu label values for %zu labels\n", name_.c_str(), values.size(),
                 label_names_.size());
    std::abort();
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(values);
  if (it == children_.end()) it = children_.emplace(values, factory_()).first;
  return *it->second;
}

template <typename T>
void Family<T>::ForEach(const std::function<void(const std::vector<std::string>&, const T&)>& fn) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, child] : children_) fn(labels, *child);
}

}  // namespace phi::metrics

#endif  // PHI_SERVICES_COMMON_METRICS_REGISTRY_H_
