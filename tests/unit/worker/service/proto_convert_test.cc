// phi.v1 -> engine types for the structured-output fields: logit_bias as a list sorted by id,
// min_new_tokens, and every Constraint kind as the ConstraintSpec the compiler takes.
#include "services/worker/service/proto_convert.h"

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

}  // namespace
}  // namespace phi::worker
