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

TEST(StopMatcher, IncludeStopReturnsTheStopStringAndNothingAfter) {
  StopMatcher m({"STOP"}, /*include_stop=*/true);
  EXPECT_EQ(m.Feed("ab ST"), "ab ");
  EXPECT_EQ(m.Feed("OP tail"), "STOP");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, MatchEndCountsEveryByteFed) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Feed("12345"), "12345");
  EXPECT_EQ(m.Feed("6E"), "6");
  EXPECT_EQ(m.Feed("ND more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.match_end(), 9u);  // "123456END"
}

TEST(StopMatcher, GuardedTextCannotEndAMatch) {
  // min_new_tokens: a stop string wholly inside guarded text does not count.
  StopMatcher m({"ab"});
  EXPECT_EQ(m.Feed("xab", /*can_stop=*/false), "xab");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Feed("cab"), "c");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.match_end(), 6u);
}

TEST(StopMatcher, MatchMayBeginInGuardedTextAndEndAfter) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Feed("go ST", /*can_stop=*/false), "go ");
  EXPECT_EQ(m.Feed("OP!"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.match_end(), 7u);
}

TEST(StopMatcher, GuardedMatchStillInPendingTextIsSkipped) {
  // The guarded "ab" stays pending (it may begin "abc"); a later feed must not match it.
  StopMatcher m({"abc", "ab"});
  EXPECT_EQ(m.Feed("ab", /*can_stop=*/false), "");  // "ab" is a proper prefix of "abc"
  EXPECT_EQ(m.Feed("x"), "abx");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, GuardedFlushReturnsEverything) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Feed("a STOP ST", /*can_stop=*/false), "a STOP ");
  EXPECT_EQ(m.Flush(), "ST");
  EXPECT_FALSE(m.stopped());
}

}  // namespace
}  // namespace phi::gateway
