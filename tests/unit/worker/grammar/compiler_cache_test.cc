// The compiler around xgrammar: errors that name the field and the position, the LRU cache and
// its metrics, one compile for concurrent callers, and the compile time limit.
#include <chrono>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/grammar/constraint_compiler.h"
#include "tests/unit/worker/grammar/grammar_test_util.h"

namespace phi::worker {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::Options;
using testing::SmallVocab;
using testing::Spec;
using testing::TestVocab;
using Kind = ConstraintSpec::Kind;

class CompilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vocab_ = SmallVocab();
    if (vocab_.tokenizer_json.empty()) GTEST_SKIP() << "PHI_TEST_TOKENIZER_DIR unset (ctest sets it)";
  }
  std::unique_ptr<ConstraintCompiler> Make(ConstraintCompilerOptions o) {
    auto c = ConstraintCompiler::Create(std::move(o));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::unique_ptr<ConstraintCompiler> Make() { return Make(Options(vocab_, &registry_)); }
  double Lookups(const std::string& result) {
    return registry_.AddCounter("phi_worker_grammar_cache_lookups_total", "", {"result"}).WithLabels({result}).Value();
  }
  double Errors() { return registry_.AddCounter("phi_worker_grammar_compile_errors_total", "").Get().Value(); }
  uint64_t Compiles() {
    return registry_.AddHistogram("phi_worker_grammar_compile_seconds", "", {}, metrics::LatencyBuckets())
        .Get()
        .Read()
        .count;
  }
  std::string Error(ConstraintCompiler& c, const ConstraintSpec& spec) {
    auto r = c.NewConstraint(spec);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    std::string message(r.status().message());
    EXPECT_THAT(message, ::testing::Not(HasSubstr(".cc:"))) << "no xgrammar source location";
    return message;
  }

  TestVocab vocab_;
  metrics::Registry registry_;
};

TEST_F(CompilerTest, ErrorsNameTheFieldAndThePosition) {
  auto c = Make();
  EXPECT_THAT(Error(*c, Spec(Kind::kJsonSchema, R"({"type": "object", "properties": {"a": }})")),
              HasSubstr("sampling.constraint.json_schema: invalid JSON at offset 39"));
  EXPECT_THAT(Error(*c, Spec(Kind::kJsonSchema, R"({"type": "strnig"})")),
              AllOf(HasSubstr("sampling.constraint.json_schema: "), HasSubstr("strnig")));
  EXPECT_THAT(Error(*c, Spec(Kind::kJsonSchema, R"({"type": "integer", "minimum": 5, "maximum": 1})")),
              HasSubstr("sampling.constraint.json_schema: "));
  EXPECT_THAT(Error(*c, Spec(Kind::kRegex, "ab[c-")),
              HasSubstr("sampling.constraint.regex: Regex parsing error at position"));
  EXPECT_THAT(Error(*c, Spec(Kind::kRegex, "a(b")), HasSubstr("sampling.constraint.regex: "));
  EXPECT_THAT(Error(*c, Spec(Kind::kGrammar, "root ::= \"a\" |\nfoo ::= ")),
              AllOf(HasSubstr("sampling.constraint.grammar: EBNF parser error at line 2, column 1")));
  EXPECT_THAT(Error(*c, Spec(Kind::kGrammar, "start ::= \"a\"\n")),
              AllOf(HasSubstr("sampling.constraint.grammar: "), HasSubstr("root")));
  EXPECT_THAT(Error(*c, Spec(Kind::kGrammar, "root ::= undefined_rule\n")),
              AllOf(HasSubstr("sampling.constraint.grammar: EBNF parser error at line 1, column 10"),
                    HasSubstr("undefined_rule")));
  EXPECT_EQ(Errors(), 8);
  // The compiler still works.
  EXPECT_TRUE(c->NewConstraint(Spec(Kind::kRegex, "abc")).ok());
}

TEST_F(CompilerTest, CacheHitsAndLruEviction) {
  auto c = Make();
  const ConstraintSpec schema = Spec(Kind::kJsonSchema, R"({"type": "object", "properties": {"a": {"type": "integer"}}})");
  ASSERT_TRUE(c->NewConstraint(schema).ok());
  ASSERT_TRUE(c->NewConstraint(schema).ok());
  ASSERT_TRUE(c->NewConstraint(schema).ok());
  EXPECT_EQ(Lookups("miss"), 1);
  EXPECT_EQ(Lookups("hit"), 2);
  EXPECT_EQ(Compiles(), 1u);
  ConstraintSpec ws = schema;
  ws.any_whitespace = true;
  ASSERT_TRUE(c->NewConstraint(ws).ok());
  EXPECT_EQ(Lookups("miss"), 2) << "another whitespace mode is another grammar";
  ASSERT_FALSE(c->NewConstraint(Spec(Kind::kRegex, "(")).ok());
  ASSERT_FALSE(c->NewConstraint(Spec(Kind::kRegex, "(")).ok());
  EXPECT_EQ(Lookups("miss"), 4) << "errors are not cached";

  metrics::Registry small;
  ConstraintCompilerOptions o = Options(vocab_, &small);
  o.max_cache_entries = 2;
  auto lru = Make(o);
  auto count = [&](const std::string& r) {
    return small.AddCounter("phi_worker_grammar_cache_lookups_total", "", {"result"}).WithLabels({r}).Value();
  };
  for (const char* re : {"a", "b", "a", "c", "a", "b"}) {
    ASSERT_TRUE(lru->NewConstraint(Spec(Kind::kRegex, re)).ok());
  }
  // a miss, b miss, a hit, c miss (evicts b), a hit, b miss.
  EXPECT_EQ(count("miss"), 4);
  EXPECT_EQ(count("hit"), 2);
}

TEST_F(CompilerTest, ConcurrentCallersShareOneCompile) {
  auto c = Make();
  const ConstraintSpec schema = Spec(Kind::kJsonSchema, R"({"type": "array", "items": {"type": "number"}})");
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { ok += c->NewConstraint(schema).ok(); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(Compiles(), 1u);
  EXPECT_EQ(Lookups("hit") + Lookups("miss"), 8);
}

}  // namespace
}  // namespace phi::worker
