// The vocabulary read from tokenizer.json: byte-level strings by id, added tokens, errors.
#include "services/worker/grammar/tokenizer_vocab.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace phi::worker {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

TEST(ByteLevelEncodeTest, Gpt2Characters) {
  EXPECT_EQ(ByteLevelEncode("hello"), "hello");
  EXPECT_EQ(ByteLevelEncode(" "), "\xC4\xA0");      // U+0120 Ġ
  EXPECT_EQ(ByteLevelEncode("\n"), "\xC4\x8A");     // U+010A Ċ
  EXPECT_EQ(ByteLevelEncode(std::string(1, '\0')), "\xC4\x80");  // U+0100
  EXPECT_EQ(ByteLevelEncode("\xAD"), "\xC5\x83");   // soft hyphen: U+0143, the last of the 68
  EXPECT_EQ(ByteLevelEncode("\xE9"), "\xC3\xA9");   // é stands for itself (as a Latin-1 byte)
}

class VocabFileTest : public ::testing::Test {
 protected:
  std::string Write(const json& j) {
    std::ofstream(path_) << j.dump();
    return path_;
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string path_ = ::testing::TempDir() + "/grammar_vocab_test_tokenizer.json";
};

json Tokenizer() {
  return json{{"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"\xC4\xA0" "b", 1}, {"<|endoftext|>", 3}}}}},
              {"added_tokens",
               json::array({{{"id", 3}, {"content", "<|endoftext|>"}, {"special", true}},
                            {{"id", 4}, {"content", "  "}, {"special", false}},
                            {{"id", 5}, {"content", "<|im_start|>"}, {"special", true}}})}};
}

TEST_F(VocabFileTest, VocabAndAddedTokensById) {
  const int32_t stop[] = {3};
  auto v = LoadByteLevelVocab(Write(Tokenizer()), stop);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 6u);
  EXPECT_EQ((*v)[0], "a");
  EXPECT_EQ((*v)[1], "\xC4\xA0" "b");
  EXPECT_EQ((*v)[2], "") << "no token has id 2";
  EXPECT_EQ((*v)[3], "<|endoftext|>") << "a stop id keeps its text";
  EXPECT_EQ((*v)[4], "\xC4\xA0\xC4\xA0") << "non-special added tokens decode to their exact text";
  EXPECT_EQ((*v)[5], "") << "special tokens are never allowed";
}

TEST_F(VocabFileTest, ErrorsNameTheFile) {
  json no_decoder = Tokenizer();
  no_decoder["decoder"] = {{"type", "Metaspace"}};
  auto s = LoadByteLevelVocab(Write(no_decoder), {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(path_));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("ByteLevel"));

  json sequence = Tokenizer();
  sequence["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({{{"type", "ByteLevel"}}})}};
  EXPECT_TRUE(LoadByteLevelVocab(Write(sequence), {}).ok());

  json bad_id = Tokenizer();
  bad_id["model"]["vocab"]["z"] = -1;
  EXPECT_THAT(std::string(LoadByteLevelVocab(Write(bad_id), {}).status().message()), HasSubstr("model.vocab"));

  std::ofstream(path_) << "{\"model\": ";
  EXPECT_THAT(std::string(LoadByteLevelVocab(path_, {}).status().message()), HasSubstr("not a JSON object"));

  auto missing = LoadByteLevelVocab("/nonexistent/tokenizer.json", {});
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/tokenizer.json"));
}

}  // namespace
}  // namespace phi::worker
