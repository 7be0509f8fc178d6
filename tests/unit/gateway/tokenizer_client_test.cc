// TokenizerClient::DecodeEach against the fake tokenizer service: any number of ids in Decode
// calls within the service's batch limit, each distinct id decoded once, padded rows "".
#include "services/gateway/tokenizer_client.h"

#include <gtest/gtest.h>

#include "tests/unit/gateway/fakes.h"

namespace phi::gateway {
namespace {

using testing::ByteId;
using testing::FakeTokenizer;
using testing::InProcessServer;

class DecodeEachTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<InProcessServer>(&tokenizer_);
    client_ = *TokenizerClient::Create({server_->address()});
  }

  FakeTokenizer tokenizer_;
  std::unique_ptr<InProcessServer> server_;
  std::unique_ptr<TokenizerClient> client_;
};

// A 2,000-token prompt with 5 alternatives per position: 12,000 ids, 128 distinct (the fake's
// ASCII ids: its other ids decode to bytes that are not UTF-8 alone).
std::vector<int32_t> ManyIds() {
  std::vector<int32_t> ids;
  for (int i = 0; i < 12000; ++i) ids.push_back(ByteId(static_cast<unsigned char>((i * 7919) % 128)));
  return ids;
}

TEST_F(DecodeEachTest, BatchesWithinTheLimitInfoReportsAndDecodesEachIdOnce) {
  tokenizer_.max_batch = 16;
  const std::vector<int32_t> ids = ManyIds();
  auto texts = client_->DecodeEach(ids, Deadline::max());
  ASSERT_TRUE(texts.ok()) << texts.status();
  ASSERT_EQ(texts->size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ((*texts)[i], FakeTokenizer::Text(ids[i])) << i;
  EXPECT_EQ(tokenizer_.decodes.load(), 128 / 16);
  EXPECT_EQ(tokenizer_.most_sequences.load(), 16);
  // Info is asked once per client, not per call.
  ASSERT_TRUE(client_->DecodeEach({ByteId('a')}, Deadline::max()).ok());
  EXPECT_EQ(tokenizer_.infos.load(), 1);
}

TEST_F(DecodeEachTest, ServiceThatDoesNotReportItsLimitGetsTheDefault) {
  tokenizer_.report_max_batch = false;
  auto texts = client_->DecodeEach(ManyIds(), Deadline::max());
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ(tokenizer_.decodes.load(), 1);  // 128 distinct ids fit in the default 256
  // A service whose limit is lower than the default and unreported refuses the batch.
  tokenizer_.max_batch = 64;
  auto fresh = *TokenizerClient::Create({server_->address()});
  EXPECT_EQ(fresh->DecodeEach(ManyIds(), Deadline::max()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DecodeEachTest, IdsPastTheVocabularyAreEmptyAndNeverSent) {
  auto texts = client_->DecodeEach({ByteId('h'), FakeTokenizer::kVocab, ByteId('i'), FakeTokenizer::kVocab + 111},
                                   Deadline::max());
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ(*texts, (std::vector<std::string>{"h", "", "i", ""}));
  // Only padded rows: nothing to ask the service.
  const int decodes = tokenizer_.decodes.load();
  texts = client_->DecodeEach({FakeTokenizer::kVocab}, Deadline::max());
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ(*texts, std::vector<std::string>{""});
  EXPECT_EQ(tokenizer_.decodes.load(), decodes);
}

TEST_F(DecodeEachTest, NegativeIdIsInvalidAndEmptyIsNoCall) {
  auto texts = client_->DecodeEach({ByteId('a'), -3}, Deadline::max());
  EXPECT_EQ(texts.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(texts.status().message().find("-3"), std::string::npos);
  texts = client_->DecodeEach({}, Deadline::max());
  ASSERT_TRUE(texts.ok());
  EXPECT_TRUE(texts->empty());
  EXPECT_EQ(tokenizer_.decodes.load(), 0);
  EXPECT_EQ(tokenizer_.infos.load(), 0);
}

TEST_F(DecodeEachTest, UnreachableTokenizerIsUnavailable) {
  auto client = *TokenizerClient::Create({"127.0.0.1:1"});
  auto texts = client->DecodeEach({ByteId('a')}, std::chrono::system_clock::now() + std::chrono::seconds(2));
  EXPECT_FALSE(texts.ok());
}

}  // namespace
}  // namespace phi::gateway
