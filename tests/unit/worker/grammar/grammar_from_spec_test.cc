// Spec checks before compiling, cache keys, and the EBNF of a choice.
#include "services/worker/grammar/grammar_from_spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace phi::worker {
namespace {

using ::testing::HasSubstr;
using Kind = ConstraintSpec::Kind;

ConstraintSpec Spec(Kind kind, std::string text = "") {
  ConstraintSpec s;
  s.kind = kind;
  s.text = std::move(text);
  return s;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(ValidateConstraintSpecTest, JsonSyntaxErrorGivesTheOffset) {
  absl::Status s = ValidateConstraintSpec(Spec(Kind::kJsonSchema, R"({"type": "object",, })"), 1024);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("sampling.constraint.json_schema: invalid JSON at offset 18"));
  s = ValidateConstraintSpec(Spec(Kind::kJsonSchema, "[1, 2]"), 1024);
  EXPECT_THAT(Message(s), HasSubstr("sampling.constraint.json_schema: a schema is a JSON object or boolean"));
  EXPECT_TRUE(ValidateConstraintSpec(Spec(Kind::kJsonSchema, R"({"type": "string"})"), 1024).ok());
}

TEST(ValidateConstraintSpecTest, SizesAndCounts) {
  absl::Status s = ValidateConstraintSpec(Spec(Kind::kRegex, std::string(2000, 'a')), 1024);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("sampling.constraint.regex: 2000 bytes; at most 1024 allowed"));
  EXPECT_THAT(Message(ValidateConstraintSpec(Spec(Kind::kGrammar, ""), 1024)),
              HasSubstr("sampling.constraint.grammar: empty"));
  ConstraintSpec choice = Spec(Kind::kChoice);
  EXPECT_THAT(Message(ValidateConstraintSpec(choice, 1024)),
              HasSubstr("sampling.constraint.choice: 0 choices; allowed 1 to 256"));
  choice.choices.assign(257, "x");
  EXPECT_THAT(Message(ValidateConstraintSpec(choice, 1024)), HasSubstr("257 choices"));
  choice.choices.assign(200, std::string(10, 'y'));
  EXPECT_THAT(Message(ValidateConstraintSpec(choice, 1024)),
              HasSubstr("sampling.constraint.choice: 2000 bytes; at most 1024 allowed"));
  choice.choices.assign(2, "ok");
  EXPECT_TRUE(ValidateConstraintSpec(choice, 1024).ok());
  EXPECT_FALSE(ValidateConstraintSpec(Spec(Kind::kNone), 1024).ok());
}

TEST(ConstraintCacheKeyTest, DistinctForDistinctSpecs) {
  ConstraintSpec a = Spec(Kind::kChoice), b = Spec(Kind::kChoice);
  a.choices = {"a,b"};
  b.choices = {"a", "b"};
  EXPECT_NE(ConstraintCacheKey(a), ConstraintCacheKey(b));
  EXPECT_NE(ConstraintCacheKey(Spec(Kind::kRegex, "x")), ConstraintCacheKey(Spec(Kind::kGrammar, "x")));
  ConstraintSpec ws = Spec(Kind::kJsonSchema, "{}");
  ws.any_whitespace = true;
  EXPECT_NE(ConstraintCacheKey(ws), ConstraintCacheKey(Spec(Kind::kJsonSchema, "{}")));
  EXPECT_EQ(ConstraintCacheKey(Spec(Kind::kRegex, "x")), ConstraintCacheKey(Spec(Kind::kRegex, "x")));
}

TEST(ChoiceGrammarTest, EscapesLiterals) {
  EXPECT_EQ(ChoiceGrammar({"a", "say \"hi\"", "back\\slash", "two\nlines", "tab\tx"}),
            "root ::= \"a\" | \"say \\\"hi\\\"\" | \"back\\\\slash\" | \"two\\u000alines\" | \"tab\\u0009x\"\n");
  // Every one parses as EBNF.
  EXPECT_NO_THROW(xgrammar::Grammar::FromEBNF(ChoiceGrammar({"a", "say \"hi\"", "back\\slash", "x\ny", "東京", ""})));
}

}  // namespace
}  // namespace phi::worker
