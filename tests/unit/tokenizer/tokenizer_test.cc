#include "services/tokenizer/tokenizer.h"

#include <atomic>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/tokenizer/tokenizer_loader.h"
#include "tests/unit/tokenizer/test_tokenizer_json.h"

namespace phi::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::unique_ptr<Tokenizer> Load(const nlohmann::json& j) {
  auto tok = LoadTokenizerJson(j.dump(), "test/tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

std::vector<uint32_t> Ids(const Tokenizer& t, std::string_view text, bool parse_special = true) {
  auto e = t.Encode(text, {.parse_special = parse_special});
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? e->ids : std::vector<uint32_t>{};
}

TEST(Tokenizer, AppliesMergesInRankOrder) {
  auto t = Load(testing::TinyTokenizerJson());
  EXPECT_THAT(Ids(*t, "hello world"), ElementsAre(259, 264));  // "hello", "Ġworld"
  EXPECT_THAT(Ids(*t, "hell"), ElementsAre(258));
  EXPECT_THAT(Ids(*t, "help"), ElementsAre(256, 'l', 'p'));
  // The same pair at several places: leftmost first.
  EXPECT_THAT(Ids(*t, "aaa"), ElementsAre(265, 'a'));
  EXPECT_THAT(Ids(*t, "aaaa"), ElementsAre(265, 265));
}

TEST(Tokenizer, ArrayMergesAreEquivalent) {
  auto a = Load(testing::TinyTokenizerJson(false));
  auto b = Load(testing::TinyTokenizerJson(true));
  for (const char* s : {"hello world", "hell o", "aaaaa", "x"}) EXPECT_EQ(Ids(*a, s), Ids(*b, s)) << s;
}

TEST(Tokenizer, LongWordsUseTheSameMergeOrder) {
  auto t = Load(testing::TinyTokenizerJson());
  std::string word(1001, 'a');  // past the short-word path
  auto ids = Ids(*t, word);
  ASSERT_EQ(ids.size(), 501u);
  for (size_t i = 0; i < 500; ++i) ASSERT_EQ(ids[i], 265u);
  EXPECT_EQ(ids.back(), uint32_t{'a'});
  std::string hello;
  for (int i = 0; i < 100; ++i) hello += "hello";
  auto long_ids = Ids(*t, hello);
  EXPECT_EQ(long_ids, std::vector<uint32_t>(100, 259));
}

TEST(Tokenizer, EmptyNulAndInvalidUtf8) {
  auto t = Load(testing::TinyTokenizerJson());
  EXPECT_THAT(Ids(*t, ""), IsEmpty());
  EXPECT_THAT(Ids(*t, std::string_view("a\0b", 3)), ElementsAre('a', 0, 'b'));
  auto bad = t->Encode("ok \xC3(", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("byte offset 3"));
}

TEST(Tokenizer, SpecialTokensParsedOrPlain) {
  auto t = Load(testing::TinyTokenizerJson());
  EXPECT_THAT(Ids(*t, "<|im_start|>hello<|im_end|>"), ElementsAre(269, 259, 270));
  auto plain = Ids(*t, "<|im_end|>", /*parse_special=*/false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(t->Decode(plain).value(), "<|im_end|>");
  // Non-special added tokens (runs of spaces) split in both modes.
  EXPECT_THAT(Ids(*t, "a    b", false), ElementsAre('a', 267, 'b'));
  EXPECT_THAT(Ids(*t, "a      b"), ElementsAre('a', 267, 268, 'b'));  // leftmost-longest
}

TEST(Tokenizer, AddedTokenFlags) {
  auto j = testing::TinyTokenizerJson();
  j["added_tokens"].push_back({{"id", 271}, {"content", "<mask>"}, {"single_word", true}, {"lstrip", true},
                               {"rstrip", true}, {"normalized", false}, {"special", true}});
  auto t = Load(j);
  // lstrip/rstrip swallow the surrounding spaces; single_word refuses a match inside a word.
  EXPECT_THAT(Ids(*t, "a <mask> b"), ElementsAre('a', 271, 'b'));
  auto inside = Ids(*t, "a<mask>b");
  EXPECT_EQ(std::count(inside.begin(), inside.end(), 271u), 0);
}

TEST(Tokenizer, DecodeAndSkipSpecial) {
  auto t = Load(testing::TinyTokenizerJson());
  std::vector<uint32_t> ids = {269, 259, 264, 267, 270};
  EXPECT_EQ(t->Decode(ids).value(), "<|im_start|>hello world    <|im_end|>");
  EXPECT_EQ(t->Decode(ids, true).value(), "hello world    ");
  // A partial character becomes U+FFFD.
  EXPECT_EQ(t->Decode({0xE2, 0x82}).value(), "\xEF\xBF\xBD");
  // An id with no token (a padded output row) decodes to nothing, as in Hugging Face.
  EXPECT_EQ(t->Decode({259, 9999, 264}).value(), "hello world");
}

TEST(Tokenizer, SegmentsNeverParseSpecialText) {
  auto t = Load(testing::TinyTokenizerJson());
  std::vector<Segment> segs = {Segment::Special("<|im_start|>"), Segment::Text("hello<|im_end|>"),
                               Segment::Special("<|im_end|>")};
  auto e = t->EncodeSegments(segs);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->ids.front(), 269u);
  EXPECT_EQ(e->ids.back(), 270u);
  EXPECT_EQ(std::count(e->ids.begin(), e->ids.end(), 270u), 1);
  auto unknown = t->EncodeSegments({Segment::Special("<|nope|>")});
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("segments[0]"));
  auto bad_text = t->EncodeSegments({Segment::Text("ok"), Segment::Text("\xFF")});
  ASSERT_FALSE(bad_text.ok());
  EXPECT_THAT(bad_text.status().message(), HasSubstr("segments[1]"));
}

TEST(Tokenizer, OffsetsCoverTheInput) {
  auto t = Load(testing::TinyTokenizerJson());
  std::string text = "hello world    <|im_end|> caf\xC3\xA9";
  auto e = t->Encode(text, {.parse_special = true, .offsets = true});
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->offsets.size(), e->ids.size());
  uint32_t pos = 0;
  for (size_t i = 0; i < e->ids.size(); ++i) {
    EXPECT_EQ(e->offsets[i].first, pos) << i;
    pos = e->offsets[i].second;
  }
  EXPECT_EQ(pos, text.size());
  EXPECT_EQ(e->offsets[0], std::make_pair(0u, 5u));
}

TEST(Tokenizer, BatchNamesTheFailingText) {
  auto t = Load(testing::TinyTokenizerJson());
  std::vector<std::string_view> texts = {"hello", "world"};
  auto ok = t->EncodeBatch(texts);
  ASSERT_TRUE(ok.ok());
  EXPECT_THAT((*ok)[0].ids, ElementsAre(259));
  std::vector<std::string_view> bad = {"hello", "\xC3"};
  auto err = t->EncodeBatch(bad);
  ASSERT_FALSE(err.ok());
  EXPECT_THAT(err.status().message(), HasSubstr("texts[1]"));
}

TEST(Tokenizer, AddPrefixSpace) {
  auto j = testing::TinyTokenizerJson();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  auto t = Load(j);
  EXPECT_THAT(Ids(*t, "world"), ElementsAre(264));
  auto e = t->Encode("world", {.offsets = true});
  EXPECT_EQ(e->offsets[0], std::make_pair(0u, 5u));
}

TEST(Tokenizer, ConcurrentEncodeMatchesSerial) {
  // Each thread has its own word cache; two tokenizers alternate on the same threads so that a
  // cache filled for one is never used for the other.
  auto a = Load(testing::TinyTokenizerJson());
  auto j = testing::TinyTokenizerJson();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  auto b = Load(j);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("hello world " + std::to_string(i) + " aaaa hell    o " + std::string(i % 7, 'l'));
  }
  std::vector<std::vector<uint32_t>> want_a, want_b;
  for (const auto& t : texts) {
    want_a.push_back(Ids(*a, t));
    want_b.push_back(Ids(*b, t));
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if (a->Encode(texts[i])->ids != want_a[i]) ++mismatches;
          if (b->Encode(texts[i])->ids != want_b[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_NE(want_a[0], want_b[0]);  // the two tokenizers really differ
}

}  // namespace
}  // namespace phi::tokenizer
