// phi.v1 -> engine types for the structured-output fields: logit_bias as a list sorted by id,
// min_new_tokens, every Constraint kind as the ConstraintSpec the compiler takes, and LoRA
// adapter names and infos.
#include "services/worker/service/proto_convert.h"

#include <string>

#include <gtest/gtest.h>

namespace phi::worker {
namespace {

TEST(ProtoConvertTest, LogitBiasIsSortedByIdAndMinNewTokensPassesThrough) {
  phi::v1::GenerateRequest req;
  req.add_prompt_ids(1);
  (*req.mutable_sampling()->mutable_logit_bias())[50256] = -100.0f;
  (*req.mutable_sampling()->mutable_logit_bias())[7] = 2.5f;
  (*req.mutable_sampling()->mutable_logit_bias())[300] = 100.0f;
  req.mutable_stopping()->set_min_new_tokens(12);
  const GenerationRequest r = FromProto(req);
  ASSERT_EQ(r.logit_bias.size(), 3u);
  EXPECT_EQ(r.logit_bias[0].token_id, 7);
  EXPECT_EQ(r.logit_bias[0].bias, 2.5f);
  EXPECT_EQ(r.logit_bias[1].token_id, 300);
  EXPECT_EQ(r.logit_bias[2].token_id, 50256);
  EXPECT_EQ(r.logit_bias[2].bias, -100.0f);
  EXPECT_EQ(r.stopping.min_new_tokens, 12);
  EXPECT_EQ(r.constraint, nullptr);  // compiled by the service, not here
}

TEST(ProtoConvertTest, EveryConstraintKindBecomesItsSpec) {
  phi::v1::SamplingParams s;
  EXPECT_FALSE(ConstraintFromProto(s).active());
  s.mutable_constraint()->set_json_object(false);
  EXPECT_FALSE(ConstraintFromProto(s).active());
  s.mutable_constraint()->set_json_object(true);
  EXPECT_EQ(ConstraintFromProto(s).kind, ConstraintSpec::Kind::kJsonObject);
  s.mutable_constraint()->set_json_schema("{\"type\": \"object\"}");
  s.mutable_constraint()->set_any_whitespace(true);
  ConstraintSpec spec = ConstraintFromProto(s);
  EXPECT_EQ(spec.kind, ConstraintSpec::Kind::kJsonSchema);
  EXPECT_EQ(spec.text, "{\"type\": \"object\"}");
  EXPECT_TRUE(spec.any_whitespace);
  s.mutable_constraint()->set_regex("[a-z]+");
  spec = ConstraintFromProto(s);
  EXPECT_EQ(spec.kind, ConstraintSpec::Kind::kRegex);
  EXPECT_EQ(spec.text, "[a-z]+");
  s.mutable_constraint()->set_grammar("root ::= \"a\"");
  spec = ConstraintFromProto(s);
  EXPECT_EQ(spec.kind, ConstraintSpec::Kind::kGrammar);
  EXPECT_EQ(spec.text, "root ::= \"a\"");
  s.mutable_constraint()->mutable_choice()->add_choices("yes");
  s.mutable_constraint()->mutable_choice()->add_choices("no");
  spec = ConstraintFromProto(s);
  EXPECT_EQ(spec.kind, ConstraintSpec::Kind::kChoice);
  EXPECT_EQ(spec.choices, (std::vector<std::string>{"yes", "no"}));
}

TEST(ProtoConvertTest, AdapterPassesThrough) {
  phi::v1::GenerateRequest req;
  req.add_prompt_ids(1);
  EXPECT_EQ(FromProto(req).adapter, "");
  req.set_adapter("phi-1_5-dpo");
  EXPECT_EQ(FromProto(req).adapter, "phi-1_5-dpo");
}

TEST(ProtoConvertTest, AdapterNamesAreCheckedByteByByte) {
  EXPECT_TRUE(CheckAdapterName("", "adapter", /*may_be_empty=*/true).ok());
  EXPECT_TRUE(CheckAdapterName("A-z_0.9", "adapter", false).ok());
  EXPECT_TRUE(CheckAdapterName(std::string(128, 'a'), "name", false).ok());
  absl::Status empty = CheckAdapterName("", "name", false);
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.message(), "name: required (1 to 128 bytes of A-Z a-z 0-9 . _ -)");
  absl::Status long_name = CheckAdapterName(std::string(129, 'a'), "adapter", true);
  EXPECT_EQ(long_name.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(long_name.message(), "adapter: 129 bytes, at most 128");
  for (std::string bad : {"a/b", "a b", "..\\x", "\xc3\xa9t\xc3\xa9", "a:b"}) {
    absl::Status st = CheckAdapterName(bad, "adapter", true);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(std::string(st.message()).rfind("adapter: byte ", 0), 0u) << st;
  }
  EXPECT_EQ(CheckAdapterName("a/b", "adapter", true).message(), "adapter: byte 1 (0x2f) is not one of A-Z a-z 0-9 . _ -");
}

TEST(ProtoConvertTest, AdapterInfoFillsEveryField) {
  AdapterInfo info{.name = "sql", .path = "/a/sql", .base_model = "microsoft/phi-1_5", .rank = 16,
                   .target_modules = {"q_proj", "fc2"}, .resident = true, .requests = 3};
  phi::v1::AdapterInfo out;
  ToProto(info, &out);
  EXPECT_EQ(out.name(), "sql");
  EXPECT_EQ(out.path(), "/a/sql");
  EXPECT_EQ(out.base_model(), "microsoft/phi-1_5");
  EXPECT_EQ(out.rank(), 16);
  ASSERT_EQ(out.target_modules_size(), 2);
  EXPECT_EQ(out.target_modules(1), "fc2");
  EXPECT_TRUE(out.resident());
  EXPECT_EQ(out.requests(), 3);
}

}  // namespace
}  // namespace phi::worker
