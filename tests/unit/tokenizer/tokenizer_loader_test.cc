#include "services/tokenizer/tokenizer_loader.h"

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/tokenizer/test_tokenizer_json.h"

namespace phi::tokenizer {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
namespace fs = std::filesystem;

absl::Status LoadStatus(const Json& j) {
  return LoadTokenizerJson(j.dump(), "dir/tokenizer.json").status();
}

void ExpectRefused(const Json& j, absl::StatusCode code, const std::string& where,
                   const std::string& what) {
  absl::Status s = LoadStatus(j);
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("dir/tokenizer.json: " + where)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(what)) << s;
}

TEST(Loader, RefusesWhatItDoesNotImplement) {
  auto j = testing::TinyTokenizerJson();
  j["model"]["type"] = "WordPiece";
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/model/type", "WordPiece");
  j = testing::TinyTokenizerJson();
  j["normalizer"] = {{"type", "NFC"}};
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/normalizer/type", "NFC");
  j = testing::TinyTokenizerJson();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/pre_tokenizer/type", "Metaspace");
  j = testing::TinyTokenizerJson();
  j["post_processor"] = {{"type", "TemplateProcessing"}};
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/post_processor/type", "TemplateProcessing");
  j = testing::TinyTokenizerJson();
  j["decoder"] = nullptr;
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/decoder", "null decoder");
  j = testing::TinyTokenizerJson();
  j["model"]["byte_fallback"] = true;
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/model/byte_fallback", "byte_fallback");
  j = testing::TinyTokenizerJson();
  j["model"]["dropout"] = 0.1;
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/model/dropout", "dropout");
  j = testing::TinyTokenizerJson();
  j["truncation"] = {{"max_length", 5}};
  ExpectRefused(j, absl::StatusCode::kUnimplemented, "/truncation", "truncation");
}

TEST(Loader, MalformedFilesNameTheLocation) {
  absl::Status s = LoadTokenizerJson("{\"model\": [1, 2", "dir/tokenizer.json").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("JSON parse error at byte"));

  auto j = testing::TinyTokenizerJson();
  j["model"]["merges"][3] = "onlyone";
  ExpectRefused(j, absl::StatusCode::kInvalidArgument, "/model/merges/3", "two tokens");
  j = testing::TinyTokenizerJson();
  j["model"]["merges"].push_back("zz qq");
  ExpectRefused(j, absl::StatusCode::kInvalidArgument, "/model", "merges[10]");
  j = testing::TinyTokenizerJson();
  j["model"]["vocab"]["a"] = "x";
  ExpectRefused(j, absl::StatusCode::kInvalidArgument, "/model/vocab/a", "non-negative id");
  j = testing::TinyTokenizerJson();
  j["added_tokens"][1]["special"] = "yes";
  ExpectRefused(j, absl::StatusCode::kInvalidArgument, "/added_tokens/1/special", "boolean");
  j = testing::TinyTokenizerJson();
  j["model"].erase("merges");
  ExpectRefused(j, absl::StatusCode::kInvalidArgument, "/model/merges", "missing");

  // Type mismatches deep in the JSON come back as a Status, never as an exception.
  j = testing::TinyTokenizerJson();
  j["pre_tokenizer"]["type"] = 5;
  ExpectRefused(j, absl::StatusCode::kInvalidArgument, "malformed JSON", "type must be string");
  j = testing::TinyTokenizerJson();
  j["added_tokens"][0]["id"] = 1ull << 40;
  ExpectRefused(j, absl::StatusCode::kInvalidArgument, "/added_tokens/0/id", "too large");

  auto missing = LoadTokenizerJsonFile("/nonexistent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/tokenizer.json"));
}

class FolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("phi_tok_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  fs::path dir_;
};

TEST_F(FolderTest, ReadsRolesFromAllThreeConfigs) {
  Write("tokenizer.json", testing::TinyTokenizerJson().dump());
  Write("tokenizer_config.json", R"({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|im_end|>"}})");
  Write("special_tokens_map.json", R"({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})");
  Write("generation_config.json", R"({"eos_token_id": [266, 270]})");
  auto t = LoadTokenizerFolder(dir_.string());
  ASSERT_TRUE(t.ok()) << t.status();
  const SpecialRoles& r = (*t)->roles();
  EXPECT_EQ(r.bos, 266u);
  EXPECT_EQ(r.eos, 270u);  // tokenizer_config.json wins over special_tokens_map.json
  EXPECT_EQ(r.pad, 266u);
  EXPECT_EQ(r.im_start, 269u);
  EXPECT_EQ(r.im_end, 270u);
  EXPECT_THAT(r.stop_ids, ::testing::UnorderedElementsAre(266u, 270u));
}

TEST_F(FolderTest, UnknownRoleTokenIsAnError) {
  Write("tokenizer.json", testing::TinyTokenizerJson().dump());
  Write("tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  auto t = LoadTokenizerFolder(dir_.string());
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("tokenizer_config.json: /eos_token"));
  Write("tokenizer_config.json", "{}");
  Write("generation_config.json", R"({"eos_token_id": 99999})");
  t = LoadTokenizerFolder(dir_.string());
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("generation_config.json: /eos_token_id"));
}

TEST_F(FolderTest, VocabMergesAndAddedTokensMatchTokenizerJson) {
  Json j = testing::TinyTokenizerJson();
  Write("vocab.json", j["model"]["vocab"].dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& m : j["model"]["merges"]) merges += m.get<std::string>() + "\n";
  Write("merges.txt", merges);
  Write("added_tokens.json", R"({"    ": 267, "  ": 268, "<|im_start|>": 269, "<|im_end|>": 270})");
  Write("special_tokens_map.json",
        R"({"eos_token": "<|endoftext|>", "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})");
  auto folder = LoadTokenizerFolder(dir_.string());
  ASSERT_TRUE(folder.ok()) << folder.status();
  auto ref = LoadTokenizerJson(j.dump(), "ref");
  for (const char* s : {"hello world", "a    b<|im_end|>", "<|endoftext|>x"}) {
    EXPECT_EQ((*folder)->Encode(s)->ids, (*ref)->Encode(s)->ids) << s;
  }
  EXPECT_TRUE((*folder)->IsSpecial(270));
  EXPECT_FALSE((*folder)->IsSpecial(267));
  EXPECT_EQ((*folder)->roles().eos, 266u);

  Write("merges.txt", "#version: 0.2\nh e\nbad line here\n");
  auto bad = LoadTokenizerFolder(dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("merges.txt:3"));
}

TEST_F(FolderTest, EmptyFolderIsNotFound) {
  auto t = LoadTokenizerFolder(dir_.string());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace phi::tokenizer
