#include "services/tokenizer/pre_tokenizer.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace phi::tokenizer {
namespace {

std::vector<std::string> Split(std::string_view text) {
  std::vector<std::string> out;
  size_t covered = 0;
  SplitGpt2(text, [&](size_t b, size_t e) {
    EXPECT_EQ(b, covered) << "pieces must cover the text in order";
    EXPECT_LT(b, e);
    covered = e;
    out.emplace_back(text.substr(b, e - b));
  });
  EXPECT_EQ(covered, text.size());
  return out;
}

using V = std::vector<std::string>;

TEST(SplitGpt2, WordsAndLeadingSpace) {
  EXPECT_EQ(Split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(Split("Hello  world"), (V{"Hello", " ", " world"}));
  EXPECT_EQ(Split("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(Split(""), V{});
}

TEST(SplitGpt2, Contractions) {
  EXPECT_EQ(Split("I'm you're"), (V{"I", "'m", " you", "'re"}));
  EXPECT_EQ(Split("DON'T"), (V{"DON", "'", "T"}));  // case-sensitive, as the pattern is
  EXPECT_EQ(Split("'sa"), (V{"'s", "a"}));
  EXPECT_EQ(Split("?'s"), (V{"?'", "s"}));
}

TEST(SplitGpt2, NumbersPunctuationWhitespace) {
  EXPECT_EQ(Split("x 123.45"), (V{"x", " 123", ".", "45"}));
  EXPECT_EQ(Split("a !!?"), (V{"a", " !!?"}));
  EXPECT_EQ(Split("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(Split("a \nb"), (V{"a", " ", "\n", "b"}));
  EXPECT_EQ(Split("end  "), (V{"end", "  "}));
  EXPECT_EQ(Split("\tx"), (V{"\t", "x"}));
}

TEST(SplitGpt2, Unicode) {
  EXPECT_EQ(Split("caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87"), (V{"caf\xC3\xA9", " \xE4\xB8\xAD\xE6\x96\x87"}));
  // A combining mark is not a letter: it splits off as "other".
  EXPECT_EQ(Split("e\xCC\x81x"), (V{"e", "\xCC\x81", "x"}));
  // U+3000 is whitespace; U+00A0 too.
  EXPECT_EQ(Split("a\xE3\x80\x80" "b"), (V{"a", "\xE3\x80\x80", "b"}));
}

}  // namespace
}  // namespace phi::tokenizer
