#include "services/gateway/stop_matcher.h"

#include <gtest/gtest.h>

namespace phi::gateway {
namespace {

TEST(StopMatcher, NoStopsPassesThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.Feed("abc"), "abc");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, MatchSpanningDeltasIsNotReturned) {
  StopMatcher m({"\nUser:"});
  std::string out;
  for (const char* d : {"Hello", " there\n", "Us", "er", ": more"}) out += m.Feed(d);
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "Hello there");
  EXPECT_EQ(m.Feed("x"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, HeldBackTextReleasedWhenItCannotMatch) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Feed("abST"), "ab");
  EXPECT_EQ(m.Feed("x"), "STx");
  EXPECT_EQ(m.Feed("ST"), "");
  EXPECT_EQ(m.Flush(), "ST");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, EarliestOfSeveralWins) {
  StopMatcher m({"world", "lo w"});
  EXPECT_EQ(m.Feed("hello world"), "hel");
  EXPECT_TRUE(m.stopped());
}

TEST(StopMatcher, StopAtVeryStart) {
  StopMatcher m({"<"});
  EXPECT_EQ(m.Feed("<a"), "");
  EXPECT_TRUE(m.stopped());
}

}  // namespace
}  // namespace phi::gateway
