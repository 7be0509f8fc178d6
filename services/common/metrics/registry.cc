#include "services/common/metrics/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace phi::metrics {

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      bucket_counts_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) bucket_counts_[i].store(0);
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    if (!std::isfinite(upper_bounds_[i]) || (i > 0 && upper_bounds_[i] <= upper_bounds_[i - 1])) {
      std::fprintf(stderr, "histogram buckets must be finite and strictly increasing\n");
      std::abort();
    }
  }
}

void Histogram::Observe(double v) {
  // First bucket whose bound is >= v ("le" is inclusive); NaN lands in +Inf.
  const size_t i = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), v) - upper_bounds_.begin();
  bucket_counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.upper_bounds = upper_bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += bucket_counts_[i].load(std::memory_order_relaxed);
    s.cumulative_counts.push_back(running);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  // Count is the +Inf bucket so that the exposition is self-consistent even
  // while observations race with the scrape.
  s.count = running;
  return s;
}

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i, start *= factor) b.push_back(start);
  return b;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i) b.push_back(start + width * i);
  return b;
}

bool IsValidMetricName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
                    (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(const std::string& name) {
  if (name.empty() || name.rfind("__", 0) == 0 || name == "le" || name == "quantile") return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' ||
                    (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  // Shortest text that reads back as the same double ("0.1", not "0.10000000000000001").
  // Fixed notation in the usual range keeps bucket labels readable (le="0.0005").
  char buf[64];
  const double a = std::fabs(v);
  const auto fmt = (a >= 1e-6 && a < 1e15) ? std::chars_format::fixed : std::chars_format::general;
  const auto res = std::to_chars(buf, buf + sizeof buf, v, fmt);
  return std::string(buf, res.ptr);
}

Registry::Entry& Registry::FindOrAdd(const std::string& name, MetricType type,
                                     const std::vector<std::string>& labels) {
  auto fail = [&](const char* why) {
    std::fprintf(stderr, "metric %s: %s\n", name.c_str(), why);
    std::abort();
  };
  if (!IsValidMetricName(name)) fail("invalid metric name");
  for (const auto& l : labels)
    if (!IsValidLabelName(l)) fail("invalid label name");
  auto it = families_.find(name);
  if (it != families_.end()) {
    if (it->second.type != type) fail("registered twice with different types");
    const std::vector<std::string>* existing =
        type == MetricType::kCounter ? &it->second.counter->label_names()
        : type == MetricType::kGauge ? &it->second.gauge->label_names()
                                     : &it->second.histogram->label_names();
    if (*existing != labels) fail("registered twice with different labels");
    return it->second;
  }
  Entry& e = families_[name];
  e.type = type;
  return e;
}

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = FindOrAdd(name, MetricType::kCounter, label_names);
  if (!e.counter)
    e.counter = std::make_unique<Family<Counter>>(name, help, std::move(label_names),
                                                  [] { return std::make_unique<Counter>(); });
  return *e.counter;
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = FindOrAdd(name, MetricType::kGauge, label_names);
  if (!e.gauge)
    e.gauge = std::make_unique<Family<Gauge>>(name, help, std::move(label_names),
                                              [] { return std::make_unique<Gauge>(); });
  return *e.gauge;
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> upper_bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = FindOrAdd(name, MetricType::kHistogram, label_names);
  if (!e.histogram) {
    // Validate the buckets once, at registration.
    Histogram check(upper_bounds);
    e.histogram = std::make_unique<Family<Histogram>>(
        name, help, std::move(label_names),
        [b = std::move(upper_bounds)] { return std::make_unique<Histogram>(b); });
  }
  return *e.histogram;
}

void Registry::AddCollector(std::function<void()> collect) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collect));
}

namespace {

std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     const std::string& extra_name = "", const std::string& extra_value = "") {
  // An empty value is written as no label at all, which is what Prometheus stores for it: a
  // series labelled only where the label applies (adapter="" for the base model) keeps the
  // exact name it had before the label existed.
  std::string out = "{";
  bool first = true;
  for (size_t i = 0; i < names.size(); ++i) {
    if (values[i].empty()) continue;
    if (!first) out += ',';
    first = false;
    out += names[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    first = false;
    out += extra_name + "=\"" + extra_value + "\"";
  }
  if (first) return "";
  out += '}';
  return out;
}

void Header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += "# HELP " + name + " " + EscapeHelp(help) + "\n";
  out += "# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string Registry::Serialize() const {
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    collectors = collectors_;
  }
  for (const auto& c : collectors) c();

  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, e] : families_) {
    switch (e.type) {
      case MetricType::kCounter: {
        Header(out, name, e.counter->help(), "counter");
        e.counter->ForEach([&](const std::vector<std::string>& lv, const Counter& c) {
          out += name + LabelSet(e.counter->label_names(), lv) + " " + FormatValue(c.Value()) + "\n";
        });
        break;
      }
      case MetricType::kGauge: {
        Header(out, name, e.gauge->help(), "gauge");
        e.gauge->ForEach([&](const std::vector<std::string>& lv, const Gauge& g) {
          out += name + LabelSet(e.gauge->label_names(), lv) + " " + FormatValue(g.Value()) + "\n";
        });
        break;
      }
      case MetricType::kHistogram: {
        Header(out, name, e.histogram->help(), "histogram");
        const auto& ln = e.histogram->label_names();
        e.histogram->ForEach([&](const std::vector<std::string>& lv, const Histogram& h) {
          const Histogram::Snapshot s = h.Read();
          for (size_t i = 0; i < s.upper_bounds.size(); ++i) {
            out += name + "_bucket" + LabelSet(ln, lv, "le", FormatValue(s.upper_bounds[i])) + " " +
                   FormatValue(static_cast<double>(s.cumulative_counts[i])) + "\n";
          }
          out += name + "_bucket" + LabelSet(ln, lv, "le", "+Inf") + " " +
                 FormatValue(static_cast<double>(s.cumulative_counts.back())) + "\n";
          out += name + "_sum" + LabelSet(ln, lv) + " " + FormatValue(s.sum) + "\n";
          out += name + "_count" + LabelSet(ln, lv) + " " + FormatValue(static_cast<double>(s.count)) + "\n";
        });
        break;
      }
    }
  }
  return out;
}

Registry& DefaultRegistry() {
  static Registry* registry = new Registry();  // never destroyed: used from detached threads
  return *registry;
}

}  // namespace phi::metrics
