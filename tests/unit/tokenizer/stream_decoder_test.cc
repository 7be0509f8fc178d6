#include "services/tokenizer/stream_decoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/tokenizer/tokenizer_loader.h"
#include "services/tokenizer/utf8.h"
#include "tests/unit/tokenizer/test_tokenizer_json.h"

namespace phi::tokenizer {
namespace {

std::unique_ptr<Tokenizer> Tiny() {
  return std::move(LoadTokenizerJson(testing::TinyTokenizerJson().dump(), "tiny").value());
}

TEST(StreamDecoder, HoldsIncompleteCharacters) {
  auto t = Tiny();
  StreamDecoder d(*t, false);
  std::string out;
  std::vector<uint32_t> euro = {0xE2, 0x82, 0xAC};  // byte tokens of U+20AC
  ASSERT_TRUE(d.Push({&euro[0], 1}, &out).ok());
  EXPECT_EQ(out, "");
  ASSERT_TRUE(d.Push({&euro[1], 1}, &out).ok());
  EXPECT_EQ(out, "");
  EXPECT_EQ(d.pending_bytes(), 2u);
  ASSERT_TRUE(d.Push({&euro[2], 1}, &out).ok());
  EXPECT_EQ(out, "\xE2\x82\xAC");
}

TEST(StreamDecoder, DanglingRemainderBecomesReplacement) {
  auto t = Tiny();
  StreamDecoder d(*t, false);
  std::string out;
  std::vector<uint32_t> ids = {259, 0xF0, 0x9F};
  ASSERT_TRUE(d.Push(ids, &out).ok());
  EXPECT_EQ(out, "hello");
  d.Finish(&out);
  EXPECT_EQ(out, "hello\xEF\xBF\xBD");
  EXPECT_EQ(out, t->Decode(ids).value());
}

TEST(StreamDecoder, ConcatenationEqualsDecodeForEverySplit) {
  auto t = Tiny();
  // Valid and invalid byte mixtures, special tokens included.
  std::vector<uint32_t> ids = {269, 0xE4, 0xB8, 0xAD, 0x80, 259, 0xE2, 0x41, 0xF0, 0x9F, 0x98, 0x80, 270, 0xC3};
  for (bool skip : {false, true}) {
    std::string want = t->Decode(ids, skip).value();
    for (size_t chunk = 1; chunk <= ids.size(); ++chunk) {
      StreamDecoder d(*t, skip);
      std::string got;
      for (size_t i = 0; i < ids.size(); i += chunk) {
        std::string delta;
        ASSERT_TRUE(d.Push(absl::MakeConstSpan(ids).subspan(i, chunk), &delta).ok());
        // Never a split character: each delta is valid UTF-8 by itself.
        std::string check;
        AppendUtf8Lossy(delta, &check);
        EXPECT_EQ(check, delta);
        got += delta;
      }
      d.Finish(&got);
      EXPECT_EQ(got, want) << "chunk " << chunk << " skip " << skip;
    }
  }
}

TEST(StreamDecoder, IdWithNoTokenDecodesToNothing) {
  // A model's padded output rows have no token: greedy decoding can pick them, and Hugging Face's
  // decode skips them.
  auto t = Tiny();
  StreamDecoder d(*t, false);
  std::string out;
  std::vector<uint32_t> a = {259};
  ASSERT_TRUE(d.Push(a, &out).ok());
  std::vector<uint32_t> b = {50000, 264};
  ASSERT_TRUE(d.Push(b, &out).ok());
  d.Finish(&out);
  EXPECT_EQ(out, "hello world");
}

}  // namespace
}  // namespace phi::tokenizer
