#include "services/common/metrics/registry.h"

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace phi::metrics {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(MetricsRegistry, CounterWithLabelsIsExposedWithHelpAndType) {
  Registry r;
  auto& f = r.AddCounter("phi_test_requests_total", "Requests handled.", {"method", "code"});
  f.WithLabels({"Encode", "OK"}).Inc();
  f.WithLabels({"Encode", "OK"}).Inc(2);
  f.WithLabels({"Decode", "INVALID_ARGUMENT"}).Inc();
  const std::string out = r.Serialize();
  EXPECT_TRUE(Contains(out, "# HELP phi_test_requests_total Requests handled.\n")) << out;
  EXPECT_TRUE(Contains(out, "# TYPE phi_test_requests_total counter\n")) << out;
  EXPECT_TRUE(Contains(out, "phi_test_requests_total{method=\"Encode\",code=\"OK\"} 3\n")) << out;
  EXPECT_TRUE(Contains(out, "phi_test_requests_total{method=\"Decode\",code=\"INVALID_ARGUMENT\"} 1\n")) << out;
}

TEST(MetricsRegistry, CounterIgnoresNegativeIncrements) {
  Registry r;
  auto& c = r.AddCounter("phi_test_total", "t").Get();
  c.Inc(5);
  c.Inc(-3);
  EXPECT_EQ(c.Value(), 5);
}

TEST(MetricsRegistry, GaugeGoesUpAndDown) {
  Registry r;
  auto& g = r.AddGauge("phi_test_in_flight", "In flight.").Get();
  g.Inc();
  g.Inc();
  g.Dec();
  g.Set(g.Value() + 0.5);
  EXPECT_TRUE(Contains(r.Serialize(), "phi_test_in_flight 1.5\n"));
}

TEST(MetricsRegistry, LabelValuesAreEscaped) {
  Registry r;
  r.AddGauge("phi_test_escape", "Help with \\ and\nnewline.", {"path"})
      .WithLabels({"a\"b\\c\nd"})
      .Set(1);
  const std::string out = r.Serialize();
  EXPECT_TRUE(Contains(out, "phi_test_escape{path=\"a\\\"b\\\\c\\nd\"} 1\n")) << out;
  EXPECT_TRUE(Contains(out, "# HELP phi_test_escape Help with \\\\ and\\nnewline.\n")) << out;
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeWithSumAndCount) {
  Registry r;
  auto& h = r.AddHistogram("phi_test_latency_seconds", "Latency.", {"route"}, {0.1, 1, 10}).WithLabels({"chat"});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0}) h.Observe(v);
  const std::string out = r.Serialize();
  EXPECT_TRUE(Contains(out, "# TYPE phi_test_latency_seconds histogram\n"));
  // 0.1 is inclusive ("le").
  EXPECT_TRUE(Contains(out, "phi_test_latency_seconds_bucket{route=\"chat\",le=\"0.10000000000000001\"} 2\n") ||
              Contains(out, "phi_test_latency_seconds_bucket{route=\"chat\",le=\"0.1\"} 2\n"))
      << out;
  EXPECT_TRUE(Contains(out, "phi_test_latency_seconds_bucket{route=\"chat\",le=\"1\"} 3\n")) << out;
  EXPECT_TRUE(Contains(out, "phi_test_latency_seconds_bucket{route=\"chat\",le=\"10\"} 4\n")) << out;
  EXPECT_TRUE(Contains(out, "phi_test_latency_seconds_bucket{route=\"chat\",le=\"+Inf\"} 5\n")) << out;
  EXPECT_TRUE(Contains(out, "phi_test_latency_seconds_sum{route=\"chat\"} 22.649999999999999\n") ||
              Contains(out, "phi_test_latency_seconds_sum{route=\"chat\"} 22.65\n"))
      << out;
  EXPECT_TRUE(Contains(out, "phi_test_latency_seconds_count{route=\"chat\"} 5\n")) << out;
}

TEST(MetricsRegistry, ConfigurableBucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0, 5, 3), (std::vector<double>{0, 5, 10}));
}

TEST(MetricsRegistry, RegisteringTheSameFamilyTwiceReturnsIt) {
  Registry r;
  auto& a = r.AddCounter("phi_test_same_total", "x", {"k"});
  auto& b = r.AddCounter("phi_test_same_total", "x", {"k"});
  EXPECT_EQ(&a, &b);
}

TEST(MetricsRegistryDeathTest, ClashingRegistrationAborts) {
  Registry r;
  r.AddCounter("phi_test_clash", "x");
  EXPECT_DEATH(r.AddGauge("phi_test_clash", "x"), "different types");
  EXPECT_DEATH(r.AddCounter("bad name", "x"), "invalid metric name");
  EXPECT_DEATH(r.AddCounter("phi_ok_total", "x", {"le"}), "invalid label name");
}

TEST(MetricsRegistry, ValuesFormatAsPrometheusExpects) {
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(-2), "-2");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(0.0 / 0.0), "NaN");
}

TEST(MetricsRegistry, ConcurrentUpdatesAreNotLost) {
  Registry r;
  auto& counter_family = r.AddCounter("phi_test_concurrent_total", "c", {"t"});
  auto& hist = r.AddHistogram("phi_test_concurrent_seconds", "h", {}, {0.5}).Get();
  auto& gauge = r.AddGauge("phi_test_concurrent_gauge", "g").Get();
  constexpr int kThreads = 8, kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads look the child up every time (the locked path), half keep it.
      auto& kept = counter_family.WithLabels({"shared"});
      for (int i = 0; i < kPerThread; ++i) {
        if (t % 2 == 0) counter_family.WithLabels({"shared"}).Inc();
        else kept.Inc();
        hist.Observe(i % 2 == 0 ? 0.25 : 1.0);
        gauge.Inc();
        gauge.Dec();
        if (i % 5000 == 0) (void)r.Serialize();  // scrapes race with updates
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(counter_family.WithLabels({"shared"}).Value(), kThreads * kPerThread);
  const auto snap = hist.Read();
  EXPECT_EQ(snap.count, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(snap.cumulative_counts[0], static_cast<uint64_t>(kThreads * kPerThread / 2));
  EXPECT_DOUBLE_EQ(snap.sum, kThreads * kPerThread / 2 * 1.25);
  EXPECT_EQ(gauge.Value(), 0);
}

TEST(MetricsRegistry, CollectorsRunAtEveryScrape) {
  Registry r;
  auto& g = r.AddGauge("phi_test_collected", "c").Get();
  int calls = 0;
  r.AddCollector([&] { g.Set(++calls); });
  EXPECT_TRUE(Contains(r.Serialize(), "phi_test_collected 1\n"));
  EXPECT_TRUE(Contains(r.Serialize(), "phi_test_collected 2\n"));
}

}  // namespace
}  // namespace phi::metrics
