// ConstraintCompiler on real tokenizers: every kind compiles, random walks through allowed
// tokens spell text the constraint accepts, eos only when complete, no id past the tokenizer.
#include "services/worker/grammar/constraint_compiler.h"

#include <chrono>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/worker/grammar/grammar_test_util.h"

namespace phi::worker {
namespace {

using ::testing::HasSubstr;
using testing::AllowedIds;
using testing::DecodedVocab;
using testing::Gpt2Vocab;
using testing::Options;
using testing::RandomWalk;
using testing::SmallVocab;
using testing::Spec;
using testing::TestVocab;
using Kind = ConstraintSpec::Kind;
using nlohmann::json;

constexpr char kPersonSchema[] = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    "ok": {"type": "boolean"}
  },
  "required": ["name", "age"],
  "additionalProperties": false
})";

void ExpectPerson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << text;
  ASSERT_TRUE(j.is_object()) << text;
  for (const auto& [key, value] : j.items()) {
    EXPECT_TRUE(key == "name" || key == "age" || key == "tags" || key == "ok") << text;
  }
  ASSERT_TRUE(j.contains("name") && j["name"].is_string()) << text;
  ASSERT_TRUE(j.contains("age") && j["age"].is_number_integer()) << text;
  EXPECT_GE(j["age"].get<int64_t>(), 0) << text;
  EXPECT_LE(j["age"].get<int64_t>(), 120) << text;
  if (j.contains("tags")) {
    ASSERT_TRUE(j["tags"].is_array()) << text;
    EXPECT_LE(j["tags"].size(), 3u) << text;
    for (const json& t : j["tags"]) EXPECT_TRUE(t == "a" || t == "b" || t == "c") << text;
  }
  if (j.contains("ok")) {
    EXPECT_TRUE(j["ok"].is_boolean()) << text;
  }
}

class Gpt2Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    vocab_ = new TestVocab(Gpt2Vocab());
    decoded_ = new std::vector<std::string>(DecodedVocab(*vocab_));
  }
  static void TearDownTestSuite() {
    delete vocab_;
    delete decoded_;
  }
  void SetUp() override {
    auto c = ConstraintCompiler::Create(Options(*vocab_, &registry_));
    ASSERT_TRUE(c.ok()) << c.status();
    compiler_ = std::move(*c);
  }
  static TestVocab* vocab_;
  static std::vector<std::string>* decoded_;
  metrics::Registry registry_;
  std::unique_ptr<ConstraintCompiler> compiler_;
};
TestVocab* Gpt2Test::vocab_ = nullptr;
std::vector<std::string>* Gpt2Test::decoded_ = nullptr;

TEST_F(Gpt2Test, JsonSchemaWalksParseAndFollowTheSchema) {
  for (bool any_whitespace : {false, true}) {
    for (uint32_t seed = 1; seed <= 12; ++seed) {
      std::mt19937 rng(seed);
      auto c = compiler_->NewConstraint(Spec(Kind::kJsonSchema, kPersonSchema, any_whitespace));
      ASSERT_TRUE(c.ok()) << c.status();
      testing::Walk w = RandomWalk(**c, *decoded_, *vocab_, rng);
      ASSERT_TRUE(w.terminated) << "seed " << seed << ": " << w.text;
      ExpectPerson(w.text);
      if (!any_whitespace) {
        // Compact: no whitespace outside strings; names and tags hold none here either way
        // unless the walk put it into "name".
        json j = json::parse(w.text);
        if (j["name"].get<std::string>().find_first_of(" \n\t") == std::string::npos) {
          EXPECT_EQ(w.text.find_first_of(" \n\t\r"), std::string::npos) << w.text;
        }
      }
    }
  }
}

TEST_F(Gpt2Test, JsonObjectWalksAreObjects) {
  for (bool any_whitespace : {false, true}) {
    for (uint32_t seed = 1; seed <= 10; ++seed) {
      std::mt19937 rng(seed);
      auto c = compiler_->NewConstraint(Spec(Kind::kJsonObject, "", any_whitespace));
      ASSERT_TRUE(c.ok()) << c.status();
      testing::Walk w = RandomWalk(**c, *decoded_, *vocab_, rng);
      ASSERT_TRUE(w.terminated) << w.text;
      json j = json::parse(w.text, nullptr, false);
      EXPECT_TRUE(!j.is_discarded() && j.is_object()) << w.text;
    }
  }
}

TEST_F(Gpt2Test, ArrayAtTheTopIsNotAJsonObject) {
  auto c = compiler_->NewConstraint(Spec(Kind::kJsonObject));
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<uint32_t> words(TokenMaskWords(vocab_->vocab_size));
  (*c)->FillNextTokenMask(words);
  for (int32_t id : AllowedIds(words, vocab_->vocab_size)) {
    ASSERT_FALSE((*decoded_)[id].empty());
    EXPECT_EQ((*decoded_)[id][0], '{') << "id " << id << " \"" << (*decoded_)[id] << "\"";
  }
}

TEST_F(Gpt2Test, RegexWalksMatch) {
  const std::string pattern = "[a-z]{2,6}-[0-9]{3}( [A-Z][a-z]*)?";
  const std::regex re(pattern);
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    auto c = compiler_->NewConstraint(Spec(Kind::kRegex, pattern));
    ASSERT_TRUE(c.ok()) << c.status();
    testing::Walk w = RandomWalk(**c, *decoded_, *vocab_, rng);
    ASSERT_TRUE(w.terminated) << w.text;
    EXPECT_TRUE(std::regex_match(w.text, re)) << w.text;
  }
}

// item ::= "x" | "[" list "]"; the text is a comma list of items.
bool ParseList(const std::string& s, size_t& i, int depth);
bool ParseItem(const std::string& s, size_t& i, int depth) {
  if (i < s.size() && s[i] == 'x') return ++i, true;
  if (i < s.size() && s[i] == '[' && depth < 64) {
    ++i;
    if (!ParseList(s, i, depth + 1)) return false;
    return i < s.size() && s[i++] == ']';
  }
  return false;
}
bool ParseList(const std::string& s, size_t& i, int depth) {
  if (!ParseItem(s, i, depth)) return false;
  while (i < s.size() && s[i] == ',') {
    ++i;
    if (!ParseItem(s, i, depth)) return false;
  }
  return true;
}

TEST_F(Gpt2Test, GrammarWalksMatch) {
  const std::string ebnf = "root ::= list\nlist ::= item (\",\" item)*\nitem ::= \"x\" | \"[\" list \"]\"\n";
  std::set<std::string> seen;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    auto c = compiler_->NewConstraint(Spec(Kind::kGrammar, ebnf));
    ASSERT_TRUE(c.ok()) << c.status();
    testing::Walk w = RandomWalk(**c, *decoded_, *vocab_, rng);
    ASSERT_TRUE(w.terminated) << w.text;
    size_t i = 0;
    EXPECT_TRUE(ParseList(w.text, i, 0) && i == w.text.size()) << w.text;
    seen.insert(w.text);
  }
  EXPECT_GT(seen.size(), 1u);
}

TEST_F(Gpt2Test, ChoiceWalksGiveOneOfTheStrings) {
  ConstraintSpec spec = Spec(Kind::kChoice);
  spec.choices = {"yes", "no", "yes, but", "say \"hi\"", "back\\slash", "two\nlines", "naïve 東京", ""};
  std::set<std::string> seen;
  for (uint32_t seed = 1; seed <= 60; ++seed) {
    std::mt19937 rng(seed);
    auto c = compiler_->NewConstraint(spec);
    ASSERT_TRUE(c.ok()) << c.status();
    testing::Walk w = RandomWalk(**c, *decoded_, *vocab_, rng);
    ASSERT_TRUE(w.terminated) << w.text;
    EXPECT_THAT(spec.choices, ::testing::Contains(w.text));
    seen.insert(w.text);
  }
  EXPECT_GE(seen.size(), 4u);
}

// CodeGen's added tokens for runs of spaces and tabs (ids 50257..50294) are ordinary text.
TEST_F(Gpt2Test, AddedWhitespaceRunsAreText) {
  auto c = compiler_->NewConstraint(Spec(Kind::kRegex, "[ \t]{0,40}x"));
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<uint32_t> words(TokenMaskWords(vocab_->vocab_size));
  (*c)->FillNextTokenMask(words);
  for (int32_t id = 50257; id <= 50294; ++id) {
    const std::string& s = (*decoded_)[id];
    ASSERT_GE(s.size(), 2u) << id;
    ASSERT_EQ(s.find_first_not_of(s[0]), std::string::npos) << id;
    EXPECT_TRUE(TokenAllowed(words, id)) << "id " << id << " (" << s.size() << " x " << int{s[0]} << ")";
  }
  EXPECT_FALSE(TokenAllowed(words, 50256));
}

TEST_F(Gpt2Test, EosOnlyWhenCompleteAndNeverPastTheTokenizer) {
  ConstraintSpec spec = Spec(Kind::kChoice);
  spec.choices = {"ab", "abc"};
  auto c = compiler_->NewConstraint(spec);
  ASSERT_TRUE(c.ok()) << c.status();
  auto id_of = [&](const std::string& s) {
    auto it = std::find(decoded_->begin(), decoded_->end(), s);
    return static_cast<int32_t>(it - decoded_->begin());
  };
  std::vector<uint32_t> words(TokenMaskWords(vocab_->vocab_size));
  auto eos_allowed = [&] { return TokenAllowed(words, 50256) || TokenAllowed(words, 50296); };
  (*c)->FillNextTokenMask(words);
  EXPECT_FALSE(eos_allowed());
  ASSERT_TRUE((*c)->Accept(id_of("a")).ok());
  (*c)->FillNextTokenMask(words);
  EXPECT_FALSE(eos_allowed());
  EXPECT_TRUE(TokenAllowed(words, id_of("b")));
  EXPECT_TRUE(TokenAllowed(words, id_of("bc")));
  EXPECT_FALSE((*c)->Accept(id_of("x")).ok()) << "a token the grammar forbids";
  ASSERT_TRUE((*c)->Accept(id_of("b")).ok());
  (*c)->FillNextTokenMask(words);
  EXPECT_TRUE(TokenAllowed(words, 50256));
  EXPECT_TRUE(TokenAllowed(words, 50296));
  EXPECT_TRUE(TokenAllowed(words, id_of("c")));
  for (int32_t id : AllowedIds(words, vocab_->vocab_size)) {
    EXPECT_TRUE(id == 50256 || id == 50296 || (*decoded_)[id] == "c") << id;
  }
  EXPECT_FALSE((*c)->IsTerminated());
  ASSERT_TRUE((*c)->Accept(id_of("c")).ok());
  (*c)->FillNextTokenMask(words);
  EXPECT_EQ(AllowedIds(words, vocab_->vocab_size), (std::vector<int32_t>{50256, 50296}));
  ASSERT_TRUE((*c)->Accept(50296).ok());
  EXPECT_TRUE((*c)->IsTerminated());
  (*c)->FillNextTokenMask(words);
  EXPECT_EQ(AllowedIds(words, vocab_->vocab_size), (std::vector<int32_t>{50256, 50296}));
  EXPECT_FALSE((*c)->Accept(id_of("c")).ok());
  EXPECT_FALSE((*c)->Accept(vocab_->vocab_size).ok());
  EXPECT_FALSE((*c)->Accept(-1).ok());
}

TEST_F(Gpt2Test, NoIdPastTheTokenizerOrSpecialIsEverAllowed) {
  for (Kind kind : {Kind::kJsonObject, Kind::kRegex}) {
    auto c = compiler_->NewConstraint(Spec(kind, kind == Kind::kRegex ? "[^a]*" : ""));
    ASSERT_TRUE(c.ok()) << c.status();
    std::vector<uint32_t> words(TokenMaskWords(vocab_->vocab_size));
    std::mt19937 rng(7);
    for (int step = 0; step < 20 && !(*c)->IsTerminated(); ++step) {
      (*c)->FillNextTokenMask(words);
      std::vector<int32_t> allowed = AllowedIds(words, vocab_->vocab_size);
      ASSERT_FALSE(allowed.empty());
      for (int32_t id : allowed) {
        EXPECT_LT(id, 50297) << "a row past the tokenizer";
        EXPECT_NE(id, 50295) << "<|im_start|> is special";
      }
      if (kind == Kind::kRegex) {
        EXPECT_GT(allowed.size(), 20000u) << "every token without an a matches [^a]*";
      }
      int32_t pick = allowed[rng() % allowed.size()];
      if (pick == 50256 || pick == 50296) continue;
      ASSERT_TRUE((*c)->Accept(pick).ok());
    }
  }
}

// A limit no compile against 50k tokens can meet: the caller gets INVALID_ARGUMENT at once,
// a second grammar finds the only thread busy past its limit (RESOURCE_EXHAUSTED), and the
// first compile finishes in the background into the cache, where later callers find it.
// A compile past its limit: the caller gets INVALID_ARGUMENT at the limit; while every compile
// thread is busy with such a grammar, new ones get RESOURCE_EXHAUSTED at once. 1,000 `a*` in a
// row take xgrammar hours (its Earley pass is superlinear), so the thread is surely still busy.
TEST(ConstraintCompilerTest, CompileTimeLimit) {
  TestVocab v = Gpt2Vocab();
  metrics::Registry registry;
  ConstraintCompilerOptions o = Options(v, &registry);
  o.compile_timeout_seconds = 2;
  o.compile_threads = 1;
  auto compiler = ConstraintCompiler::Create(o);
  ASSERT_TRUE(compiler.ok()) << compiler.status();
  std::string slow;
  for (int i = 0; i < 4000; ++i) slow += "a*";
  auto first = (*compiler)->NewConstraint(Spec(Kind::kRegex, slow));
  EXPECT_EQ(first.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(first.status().message()),
              HasSubstr("sampling.constraint.regex: took more than 2 s to compile"));
  auto second = (*compiler)->NewConstraint(Spec(Kind::kRegex, "[0-9]+"));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("sampling.constraint.regex"));
  EXPECT_GE(registry.AddCounter("phi_worker_grammar_compile_errors_total", "").Get().Value(), 1);
}

// A compile that outlives its caller's limit still finishes in the background and is cached.
TEST(ConstraintCompilerTest, ALateCompileIsCached) {
  TestVocab v = Gpt2Vocab();
  metrics::Registry registry;
  ConstraintCompilerOptions o = Options(v, &registry);
  o.compile_timeout_seconds = 0.001;
  auto compiler = ConstraintCompiler::Create(o);
  ASSERT_TRUE(compiler.ok()) << compiler.status();
  const ConstraintSpec a = Spec(Kind::kJsonSchema, kPersonSchema);
  absl::StatusOr<std::unique_ptr<TokenConstraint>> later = (*compiler)->NewConstraint(a);
  for (int i = 0; i < 1200 && !later.ok(); ++i) {
    EXPECT_THAT(std::string(later.status().message()), HasSubstr("took more than 0.001 s to compile"));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    later = (*compiler)->NewConstraint(a);
  }
  ASSERT_TRUE(later.ok()) << later.status();
  std::mt19937 rng(3);
  testing::Walk w = RandomWalk(**later, DecodedVocab(v), v, rng);
  ASSERT_TRUE(w.terminated);
  ExpectPerson(w.text);
  EXPECT_GE(registry.AddCounter("phi_worker_grammar_cache_lookups_total", "", {"result"}).WithLabels({"hit"}).Value(), 1);
}

// Rows not a multiple of 32: the last word's spare bits stay clear.
TEST(ConstraintCompilerTest, SpareBitsOfTheLastWordStayClear) {
  TestVocab v = Gpt2Vocab();
  v.vocab_size = 50300;
  metrics::Registry registry;
  auto compiler = ConstraintCompiler::Create(Options(v, &registry));
  ASSERT_TRUE(compiler.ok()) << compiler.status();
  auto c = (*compiler)->NewConstraint(Spec(Kind::kRegex, ".*"));
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<uint32_t> words(TokenMaskWords(v.vocab_size), 0xFFFFFFFFu);
  (*c)->FillNextTokenMask(words);
  EXPECT_EQ(words.back() >> (50300 % 32), 0u);
  EXPECT_TRUE(TokenAllowed(words, 50256));  // ".*" is complete from the start
}

TEST(ConstraintCompilerTest, CreateRefusesBadOptions) {
  metrics::Registry registry;
  TestVocab v = Gpt2Vocab();
  ConstraintCompilerOptions o = Options(v, &registry);
  o.tokenizer_json_path = "/nonexistent/tokenizer.json";
  auto missing = ConstraintCompiler::Create(o);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/tokenizer.json"));
  o = Options(v, &registry);
  o.eos_token_ids = {};
  EXPECT_FALSE(ConstraintCompiler::Create(o).ok());
  o = Options(v, &registry);
  o.eos_token_ids = {51200};
  EXPECT_FALSE(ConstraintCompiler::Create(o).ok());
  o = Options(v, &registry);
  o.compile_timeout_seconds = 0;
  EXPECT_FALSE(ConstraintCompiler::Create(o).ok());
}

}  // namespace
}  // namespace phi::worker
