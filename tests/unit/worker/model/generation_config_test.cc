#include "services/worker/model/generation_config.h"

#include <gtest/gtest.h>

#include <string>

namespace phi::worker::model {
namespace {

GenerationConfig ParseOk(const std::string& text) {
  auto g = ParseGenerationConfig(text, "m/generation_config.json");
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : GenerationConfig{};
}

// The error names the file and the field.
void ExpectRefused(const std::string& text, const std::string& field) {
  auto g = ParseGenerationConfig(text, "m/generation_config.json");
  ASSERT_FALSE(g.ok()) << text;
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("m/generation_config.json"), std::string::npos) << g.status();
  EXPECT_NE(g.status().message().find("'" + field + "'"), std::string::npos) << g.status();
}

TEST(GenerationConfigTest, EosIdsAsIntOrList) {
  GenerationConfig g = ParseOk(R"({"eos_token_id": [50256, 50295], "bos_token_id": 50256})");
  EXPECT_EQ(g.eos_token_ids, (std::vector<int32_t>{50256, 50295}));
  EXPECT_EQ(g.bos_token_id, 50256);
  EXPECT_EQ(ParseOk(R"({"eos_token_id": 7})").eos_token_ids, std::vector<int32_t>{7});
  ExpectRefused(R"({"eos_token_id": "x"})", "eos_token_id");
}

TEST(GenerationConfigTest, AbsentAndNullFieldsStayUnset) {
  for (const char* text : {R"({})", R"({"do_sample": null, "temperature": null, "top_p": null, "top_k": null,
                                       "repetition_penalty": null, "max_new_tokens": null})"}) {
    GenerationConfig g = ParseOk(text);
    EXPECT_FALSE(g.do_sample || g.temperature || g.top_p || g.top_k || g.repetition_penalty || g.max_new_tokens)
        << text;
    GenerationDefaults d = DefaultsOf(g);
    EXPECT_EQ(d.temperature, 0.0f);  // greedy: transformers' do_sample defaults to false
    EXPECT_EQ(d.top_p, 1.0f);
    EXPECT_EQ(d.top_k, 0);
    EXPECT_EQ(d.repetition_penalty, 1.0f);
    EXPECT_EQ(d.max_new_tokens, 256);
  }
}

TEST(GenerationConfigTest, ReadsEverySamplingField) {
  GenerationConfig g = ParseOk(R"({"do_sample": true, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                                   "repetition_penalty": 1.1, "max_new_tokens": 300, "max_length": 20})");
  ASSERT_TRUE(g.do_sample && g.temperature && g.top_p && g.top_k && g.repetition_penalty && g.max_new_tokens);
  GenerationDefaults d = DefaultsOf(g);
  EXPECT_FLOAT_EQ(d.temperature, 0.7f);
  EXPECT_FLOAT_EQ(d.top_p, 0.9f);
  EXPECT_EQ(d.top_k, 40);
  EXPECT_FLOAT_EQ(d.repetition_penalty, 1.1f);
  EXPECT_EQ(d.max_new_tokens, 300);
}

TEST(GenerationConfigTest, DoSampleFalseIsGreedyWhateverTheTemperature) {
  GenerationDefaults d = DefaultsOf(ParseOk(R"({"do_sample": false, "temperature": 0.6, "top_p": 0.9})"));
  EXPECT_EQ(d.temperature, 0.0f);
  EXPECT_FLOAT_EQ(d.top_p, 0.9f);  // kept: a request that samples gets it
  // Absent do_sample is false too.
  EXPECT_EQ(DefaultsOf(ParseOk(R"({"temperature": 0.6})")).temperature, 0.0f);
}

TEST(GenerationConfigTest, DoSampleWithoutTemperatureSamplesAtOne) {
  EXPECT_EQ(DefaultsOf(ParseOk(R"({"do_sample": true})")).temperature, 1.0f);
}

TEST(GenerationConfigTest, WrongTypesAreRefusedNamingTheField) {
  ExpectRefused(R"({"do_sample": "yes"})", "do_sample");
  ExpectRefused(R"({"do_sample": 1})", "do_sample");
  ExpectRefused(R"({"temperature": "0.7"})", "temperature");
  ExpectRefused(R"({"top_p": [0.9]})", "top_p");
  ExpectRefused(R"({"top_k": 40.5})", "top_k");
  ExpectRefused(R"({"repetition_penalty": true})", "repetition_penalty");
  ExpectRefused(R"({"max_new_tokens": "256"})", "max_new_tokens");
  ExpectRefused(R"({"pad_token_id": -1})", "pad_token_id");
}

TEST(GenerationConfigTest, OutOfRangeIsRefusedNamingTheField) {
  ExpectRefused(R"({"temperature": -0.1})", "temperature");
  ExpectRefused(R"({"temperature": 101})", "temperature");
  ExpectRefused(R"({"do_sample": true, "temperature": 0})", "temperature");
  ExpectRefused(R"({"top_p": 0})", "top_p");
  ExpectRefused(R"({"top_p": 1.5})", "top_p");
  ExpectRefused(R"({"top_k": -1})", "top_k");
  ExpectRefused(R"({"repetition_penalty": 0})", "repetition_penalty");
  ExpectRefused(R"({"repetition_penalty": 11})", "repetition_penalty");
  ExpectRefused(R"({"max_new_tokens": 0})", "max_new_tokens");
}

// Found by tests/fuzz/model_config_fuzzer.cc: positive as a double, 0 as the float kept.
TEST(GenerationConfigTest, OpenBoundsHoldAfterTheFloatConversion) {
  ExpectRefused(R"({"top_p": 1e-50})", "top_p");
  ExpectRefused(R"({"repetition_penalty": 1e-46})", "repetition_penalty");
  EXPECT_GT(*ParseOk(R"({"top_p": 1e-30})").top_p, 0.0f);
}

TEST(GenerationConfigTest, RefusesWhatIsNotAnObject) {
  EXPECT_FALSE(ParseGenerationConfig("[1]", "g.json").ok());
  EXPECT_FALSE(ParseGenerationConfig("{\"top_k\": ", "g.json").ok());
}

}  // namespace
}  // namespace phi::worker::model
