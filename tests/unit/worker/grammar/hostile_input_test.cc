// Texts a client controls reach xgrammar's parsers (regex, EBNF, JSON schema): hostile ones at
// the size limit — nesting as deep as 64 KiB allows, huge repetition counts, unterminated
// constructs — must come back as INVALID_ARGUMENT (or compile), never crash or hang the worker.
#include <chrono>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "grammar_test_util.h"

namespace phi::worker {
namespace {

using ::testing::HasSubstr;
using Kind = ConstraintSpec::Kind;
using testing::Options;
using testing::SmallVocab;
using testing::Spec;
using testing::TestVocab;

std::string Repeat(const std::string& s, int n) {
  std::string out;
  out.reserve(s.size() * n);
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

class HostileInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v_ = SmallVocab();
    if (v_.tokenizer_json.empty()) GTEST_SKIP() << "needs PHI_TEST_TOKENIZER_DIR (ctest fixture)";
    ConstraintCompilerOptions o = Options(v_, &registry_);
    o.compile_timeout_seconds = 5;  // each case below is refused or compiles well within it
    auto c = ConstraintCompiler::Create(o);
    ASSERT_TRUE(c.ok()) << c.status();
    compiler_ = std::move(*c);
  }

  // Either compiles or is refused by name; anything else (a crash, an escape) fails the test.
  void ExpectHandled(Kind kind, const std::string& text, const char* field) {
    auto r = compiler_->NewConstraint(Spec(kind, text));
    if (r.ok()) return;
    EXPECT_THAT(r.status().code(), ::testing::AnyOf(absl::StatusCode::kInvalidArgument,
                                                     absl::StatusCode::kResourceExhausted))
        << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(field));
  }

  TestVocab v_;
  metrics::Registry registry_;
  std::unique_ptr<ConstraintCompiler> compiler_;
};

TEST_F(HostileInputTest, DeeplyNestedRegex) {
  ExpectHandled(Kind::kRegex, Repeat("(", 30000) + "a" + Repeat(")", 30000), "sampling.constraint.regex");
  ExpectHandled(Kind::kRegex, Repeat("(", 60000), "sampling.constraint.regex");
  ExpectHandled(Kind::kRegex, Repeat("[", 60000), "sampling.constraint.regex");
  ExpectHandled(Kind::kRegex, "a{999999999}", "sampling.constraint.regex");
  ExpectHandled(Kind::kRegex, "(a{1000}){1000}", "sampling.constraint.regex");
}

TEST_F(HostileInputTest, DeeplyNestedGrammar) {
  ExpectHandled(Kind::kGrammar, "root ::= " + Repeat("(", 30000) + "\"a\"" + Repeat(")", 30000),
                "sampling.constraint.grammar");
  ExpectHandled(Kind::kGrammar, "root ::= " + Repeat("(", 60000), "sampling.constraint.grammar");
  ExpectHandled(Kind::kGrammar, "root ::= \"a\"{999999999}", "sampling.constraint.grammar");
  ExpectHandled(Kind::kGrammar, "root ::= root root", "sampling.constraint.grammar");
  ExpectHandled(Kind::kGrammar, "root ::= " + Repeat("\"a\" | ", 10000) + "\"b\"", "sampling.constraint.grammar");
}

TEST_F(HostileInputTest, DeeplyNestedJsonSchema) {
  ExpectHandled(Kind::kJsonSchema, Repeat("[", 60000), "sampling.constraint.json_schema");
  ExpectHandled(Kind::kJsonSchema,
                Repeat("{\"type\":\"array\",\"items\":", 2000) + "{}" + Repeat("}", 2000),
                "sampling.constraint.json_schema");
  ExpectHandled(Kind::kJsonSchema,
                Repeat("{\"type\":\"object\",\"properties\":{\"a\":", 1500) + "{}" + Repeat("}}", 1500),
                "sampling.constraint.json_schema");
  ExpectHandled(Kind::kJsonSchema, R"({"$ref": "#"})", "sampling.constraint.json_schema");
  ExpectHandled(Kind::kJsonSchema, R"({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})",
                "sampling.constraint.json_schema");
  ExpectHandled(Kind::kJsonSchema, R"({"type": "string", "minLength": 999999999})", "sampling.constraint.json_schema");
  ExpectHandled(Kind::kJsonSchema, R"({"type": "array", "minItems": 999999999})", "sampling.constraint.json_schema");
}

TEST_F(HostileInputTest, TheCompilerStillWorksAfterwards) {
  ExpectHandled(Kind::kRegex, Repeat("(", 60000), "sampling.constraint.regex");
  auto ok = compiler_->NewConstraint(Spec(Kind::kRegex, "[0-9]{1,3}"));
  ASSERT_TRUE(ok.ok()) << ok.status();
}

// xgrammar cannot stop a compile, and some short texts take hours (1,000 `a*` in a row: its
// Earley pass is superlinear, 0.3 s at 250, 1.3 s at 500). The caller gets its error at the time
// limit, and destroying the compiler (a worker's exit) does not wait for the stuck compile.
TEST(HostileCompileTest, AStuckCompileHoldsNeitherTheCallerNorTheExit) {
  TestVocab v = SmallVocab();
  if (v.tokenizer_json.empty()) GTEST_SKIP() << "needs PHI_TEST_TOKENIZER_DIR (ctest fixture)";
  metrics::Registry registry;
  ConstraintCompilerOptions o = Options(v, &registry);
  o.compile_timeout_seconds = 0.5;
  auto compiler = ConstraintCompiler::Create(o);
  ASSERT_TRUE(compiler.ok()) << compiler.status();
  auto stuck = (*compiler)->NewConstraint(Spec(Kind::kRegex, Repeat("a*", 4000)));
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kInvalidArgument) << stuck.status();
  EXPECT_THAT(std::string(stuck.status().message()), HasSubstr("took more than 0.5 s to compile"));
  const auto t0 = std::chrono::steady_clock::now();
  compiler->reset();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
}

}  // namespace
}  // namespace phi::worker
