#include "services/common/logging.h"

#include <unistd.h>

#include <cstdio>
#include <string>

#include <gtest/gtest.h>

namespace phi::log {
namespace {

// Captures what PHI_LOG writes to stderr.
std::string CaptureStderr(const std::function<void()>& fn) {
  testing::internal::CaptureStderr();
  fn();
  return testing::internal::GetCapturedStderr();
}

TEST(Logging, OneJsonObjectPerLineWithRequestId) {
  SetService("tokenizer");
  SetMinLevel(Level::kInfo);
  const std::string out = CaptureStderr([] {
    PHI_LOG(INFO, "request_done").Str("request_id", "r-1").Int("tokens", 42).Num("seconds", 0.5).Bool("ok", true);
  });
  ASSERT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1) << "exactly one line";
  EXPECT_NE(out.find("\"level\":\"info\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"service\":\"tokenizer\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"event\":\"request_done\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"request_id\":\"r-1\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"tokens\":42"), std::string::npos) << out;
  EXPECT_NE(out.find("\"ok\":true"), std::string::npos) << out;
}

TEST(Logging, BelowMinimumLevelWritesNothing) {
  SetMinLevel(Level::kWarning);
  const std::string out = CaptureStderr([] { PHI_LOG(INFO, "quiet"); });
  EXPECT_EQ(out, "");
  SetMinLevel(Level::kInfo);
}

TEST(Logging, StringsAreJsonEscaped) {
  std::string out;
  AppendJsonString(&out, "a\"b\\c\nd\x01");
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\nd\\u0001\"");
}

TEST(Logging, ParseLevel) {
  Level l;
  EXPECT_TRUE(ParseLevel("warning", &l));
  EXPECT_EQ(l, Level::kWarning);
  EXPECT_FALSE(ParseLevel("loud", &l));
}

}  // namespace
}  // namespace phi::log
