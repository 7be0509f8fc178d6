#include "services/tokenizer/utf8.h"

#include <gtest/gtest.h>

namespace phi::tokenizer {
namespace {

std::string Lossy(std::string_view s) {
  std::string out;
  AppendUtf8Lossy(s, &out);
  return out;
}

const std::string kFffd(kReplacementChar);

TEST(Utf8, FindInvalidGivesByteOffset) {
  EXPECT_EQ(FindInvalidUtf8("hello"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8(""), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("h\xC3\xA9llo \xF0\x9F\x98\x80"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8(std::string_view("a\0b", 3)), std::string_view::npos);  // NUL is text
  EXPECT_EQ(FindInvalidUtf8("abc\xFF"), 3u);
  EXPECT_EQ(FindInvalidUtf8("0123456789\x80"), 10u);       // past the 8-byte fast path
  EXPECT_EQ(FindInvalidUtf8("ab\xC3"), 2u);                 // truncated
  EXPECT_EQ(FindInvalidUtf8("\xC0\x80"), 0u);               // overlong NUL
  EXPECT_EQ(FindInvalidUtf8("x\xED\xA0\x80"), 1u);          // surrogate
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);       // above U+10FFFF
}

TEST(Utf8, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(Lossy("ok"), "ok");
  EXPECT_EQ(Lossy("\xFF"), kFffd);
  EXPECT_EQ(Lossy("a\xE2\x82z"), "a" + kFffd + "z");         // one U+FFFD for a truncated sequence
  EXPECT_EQ(Lossy("\xE2\x82"), kFffd);
  EXPECT_EQ(Lossy("\xE0\x80"), kFffd + kFffd);               // E0 80 is never valid: two subparts
  EXPECT_EQ(Lossy("\xF0\x9F\x98"), kFffd);
  EXPECT_EQ(Lossy("\x80\x80"), kFffd + kFffd);
  EXPECT_EQ(Lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(Utf8, IncompleteTail) {
  EXPECT_EQ(IncompleteUtf8Tail("abc"), 0u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xE2"), 1u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xE2\x82"), 2u);
  EXPECT_EQ(IncompleteUtf8Tail("a\xE2\x82\xAC"), 0u);
  EXPECT_EQ(IncompleteUtf8Tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(IncompleteUtf8Tail("\xE0\x80"), 0u);   // already invalid: nothing to wait for
  EXPECT_EQ(IncompleteUtf8Tail("\xFF"), 0u);
  EXPECT_EQ(IncompleteUtf8Tail("\x80\x80\x80"), 0u);
}

}  // namespace
}  // namespace phi::tokenizer
