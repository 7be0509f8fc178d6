#include "services/worker/model/phi_config.h"

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace phi::worker::model {
namespace {

nlohmann::json Phi15() {
  return {{"model_type", "phi"},       {"architectures", {"PhiForCausalLM"}},
          {"vocab_size", 51200},       {"hidden_size", 2048},
          {"intermediate_size", 8192}, {"num_hidden_layers", 24},
          {"num_attention_heads", 32}, {"num_key_value_heads", nullptr},
          {"hidden_act", "gelu_new"},  {"max_position_embeddings", 2048},
          {"layer_norm_eps", 1e-5},    {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},   {"partial_rotary_factor", 0.5},
          {"qk_layernorm", false},     {"tie_word_embeddings", false},
          {"bos_token_id", 1},         {"eos_token_id", 2},
          {"torch_dtype", "bfloat16"}};
}

void ExpectRefusedNaming(const nlohmann::json& j, const std::string& field) {
  auto c = ParsePhiConfig(j.dump(), "cfg/config.json");
  ASSERT_FALSE(c.ok()) << "accepted " << field;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("'" + field + "'"), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("cfg/config.json"), std::string::npos) << c.status();
}

TEST(PhiConfigTest, ParsesPhi15) {
  auto c = ParsePhiConfig(Phi15().dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 51200);
  EXPECT_EQ(c->num_key_value_heads, 32);
  EXPECT_EQ(c->head_dim(), 64);
  EXPECT_EQ(c->rotary_dim(), 32);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{2});
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(PhiConfigTest, RefusesUnsupportedValuesByName) {
  auto j = Phi15();
  j["qk_layernorm"] = true;
  ExpectRefusedNaming(j, "qk_layernorm");
  j = Phi15();
  j["hidden_act"] = "gelu";
  ExpectRefusedNaming(j, "hidden_act");
  j = Phi15();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  ExpectRefusedNaming(j, "rope_scaling");
  j = Phi15();
  j["num_key_value_heads"] = 8;
  ExpectRefusedNaming(j, "num_key_value_heads");
  j = Phi15();
  j["tie_word_embeddings"] = true;
  ExpectRefusedNaming(j, "tie_word_embeddings");
  j = Phi15();
  j["model_type"] = "llama";
  ExpectRefusedNaming(j, "model_type");
  j = Phi15();
  j["hidden_size"] = 2050;
  ExpectRefusedNaming(j, "hidden_size");
  j = Phi15();
  j["partial_rotary_factor"] = 0.01;
  ExpectRefusedNaming(j, "partial_rotary_factor");
  j = Phi15();
  j["vocab_size"] = "big";
  ExpectRefusedNaming(j, "vocab_size");
  j = Phi15();
  j["num_hidden_layers"] = 0;
  ExpectRefusedNaming(j, "num_hidden_layers");
}

TEST(PhiConfigTest, RefusesBadJson) {
  auto c = ParsePhiConfig("{\"model_type\": ", "x/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("x/config.json"), std::string::npos);
}

}  // namespace
}  // namespace phi::worker::model
