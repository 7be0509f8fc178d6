// What no constrained output may contain, checked on the mask of Phi-1.5's real vocabulary:
// a raw control character inside a JSON string (RFC 8259 wants it escaped), a UTF-16
// surrogate (U+D800..U+DFFF: bytes ED A0..BF, never valid UTF-8), and with any_whitespace a
// run of whitespace longer than kMaxJsonWhitespace. The first two need the xgrammar patches
// in tools/deps/patches; the last, the bound grammar_from_spec passes.
#include <algorithm>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "gtest/gtest.h"
#include "services/worker/grammar/constraint_compiler.h"
#include "services/worker/grammar/grammar_from_spec.h"
#include "tests/unit/worker/grammar/grammar_test_util.h"

namespace phi::worker {
namespace {

using testing::AllowedIds;
using testing::DecodedVocab;
using testing::Gpt2Vocab;
using testing::Options;
using testing::Spec;
using testing::TestVocab;
using Kind = ConstraintSpec::Kind;

// The first control character of `token` read as the inside of a JSON string (up to its
// closing quote; an escape's second character is skipped), or -1.
int ControlCharInString(const std::string& token) {
  for (size_t i = 0; i < token.size(); ++i) {
    auto u = static_cast<unsigned char>(token[i]);
    if (token[i] == '"') return -1;
    if (token[i] == '\\') {
      ++i;
      continue;
    }
    if (u < 0x20) return u;
  }
  return -1;
}

// ED followed by A0..BF starts the UTF-8-like encoding of a surrogate.
bool HasSurrogate(const std::string& token) {
  for (size_t i = 0; i + 1 < token.size(); ++i) {
    auto lead = static_cast<unsigned char>(token[i]);
    auto next = static_cast<unsigned char>(token[i + 1]);
    if (lead == 0xED && next >= 0xA0 && next <= 0xBF) return true;
  }
  return false;
}

std::string Hex(const std::string& s) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    out += kDigits[u >> 4];
    out += kDigits[u & 15];
    out += ' ';
  }
  return out;
}

class OutputValidityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    vocab_ = new TestVocab(Gpt2Vocab());
    decoded_ = new std::vector<std::string>(DecodedVocab(*vocab_));
    ids_ = new std::unordered_map<std::string, int32_t>();
    for (int32_t id = 0; id < static_cast<int32_t>(decoded_->size()); ++id) {
      if (!(*decoded_)[id].empty()) ids_->emplace((*decoded_)[id], id);
    }
  }
  static void TearDownTestSuite() {
    delete vocab_;
    delete decoded_;
    delete ids_;
  }
  void SetUp() override {
    auto c = ConstraintCompiler::Create(Options(*vocab_, &registry_));
    ASSERT_TRUE(c.ok()) << c.status();
    compiler_ = std::move(*c);
  }

  static int32_t IdOf(const std::string& bytes) {
    auto it = ids_->find(bytes);
    EXPECT_NE(it, ids_->end()) << "no token for " << Hex(bytes);
    return it == ids_->end() ? -1 : it->second;
  }

  std::unique_ptr<TokenConstraint> After(const ConstraintSpec& spec, const std::string& prefix) {
    auto c = compiler_->NewConstraint(spec);
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return nullptr;
    for (char ch : prefix) {
      absl::Status s = (*c)->Accept(IdOf(std::string(1, ch)));
      EXPECT_TRUE(s.ok()) << "prefix " << prefix << ": " << s;
    }
    return std::move(*c);
  }

  std::vector<int32_t> Allowed(TokenConstraint& c) {
    std::vector<uint32_t> words(TokenMaskWords(vocab_->vocab_size));
    c.FillNextTokenMask(words);
    return AllowedIds(words, vocab_->vocab_size);
  }

  // After a lone ED byte, only the continuations of U+D000..U+D7FF (80..9F) may follow.
  void ExpectNoSurrogateAfterEd(TokenConstraint& c, const std::string& what) {
    ASSERT_TRUE(c.Accept(IdOf("\xED")).ok()) << what << ": ED (the lead of U+D000..U+DFFF) refused";
    std::vector<int32_t> allowed = Allowed(c);
    EXPECT_FALSE(allowed.empty()) << what;
    for (int32_t id : allowed) {
      const std::string& s = (*decoded_)[id];
      ASSERT_FALSE(s.empty()) << what << ": id " << id << " after a lone ED";
      auto first = static_cast<unsigned char>(s[0]);
      EXPECT_TRUE(first >= 0x80 && first <= 0x9F) << what << ": ED then " << Hex(s) << "(id " << id << ")";
    }
    EXPECT_NE(std::find(allowed.begin(), allowed.end(), IdOf("\x95")), allowed.end()) << what << ": ED 95 is U+D5xx";
  }

  static TestVocab* vocab_;
  static std::vector<std::string>* decoded_;
  static std::unordered_map<std::string, int32_t>* ids_;
  metrics::Registry registry_;
  std::unique_ptr<ConstraintCompiler> compiler_;
};
TestVocab* OutputValidityTest::vocab_ = nullptr;
std::vector<std::string>* OutputValidityTest::decoded_ = nullptr;
std::unordered_map<std::string, int32_t>* OutputValidityTest::ids_ = nullptr;

struct StringCase {
  Kind kind;
  const char* schema;
  const char* prefix;  // leaves the matcher inside a JSON string
};

// Plain, length-bounded (the repetition xgrammar 0.2.9 lowered to [^"\\\r\n]) and key strings
// (the trie of additionalProperties next to named properties), at several depths.
const StringCase kStringCases[] = {
    {Kind::kJsonSchema, R"({"type": "string"})", "\""},
    {Kind::kJsonSchema, R"({"type": "string", "maxLength": 8})", "\""},
    {Kind::kJsonSchema, R"({"type": "string", "minLength": 2, "maxLength": 300})", "\"ab"},
    {Kind::kJsonSchema,
     R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}}, "required": ["name"]})",
     "{\"name\":\""},
    {Kind::kJsonSchema,
     R"({"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 4}, "minItems": 1})", "[\""},
    {Kind::kJsonSchema,
     R"({"type": "object", "properties": {"ab": {"type": "integer"}}, "additionalProperties": {"type": "string"}})",
     "{\""},
    {Kind::kJsonSchema,
     R"({"type": "object", "properties": {"ab": {"type": "integer"}}, "additionalProperties": {"type": "string"}})",
     "{\"a"},
    {Kind::kJsonSchema,
     R"({"type": "object", "properties": {"ab": {"type": "integer"}}, "additionalProperties": {"type": "string"}})",
     "{\"zz\":\""},
    {Kind::kJsonObject, "", "{\""},
    {Kind::kJsonObject, "", "{\"k\":\""},
};

// Inside every string, along a short walk of string characters: no allowed token holds a raw
// control character before its closing quote, nor a surrogate; a lone ED goes on with 80..9F.
TEST_F(OutputValidityTest, JsonStringsAdmitNoControlCharacterNorSurrogate) {
  for (bool any_whitespace : {false, true}) {
    for (const StringCase& sc : kStringCases) {
      const std::string what = std::string(sc.schema) + " after " + sc.prefix +
                               (any_whitespace ? " (any_whitespace)" : "");
      ConstraintSpec spec = Spec(sc.kind, sc.schema, any_whitespace);
      std::unique_ptr<TokenConstraint> c = After(spec, sc.prefix);
      ASSERT_NE(c, nullptr) << what;
      std::mt19937 rng(11);
      for (int step = 0; step < 4; ++step) {
        std::vector<int32_t> allowed = Allowed(*c);
        if (step == 0) {
          ASSERT_GT(allowed.size(), 1000u) << what << ": a string admits most tokens";
        }
        std::vector<int32_t> inside;  // one-byte tokens that keep the walk inside the string
        for (int32_t id : allowed) {
          const std::string& s = (*decoded_)[id];
          int control = ControlCharInString(s);
          EXPECT_EQ(control, -1) << what << ", step " << step << ": id " << id << " (" << Hex(s)
                                 << ") puts a raw control character into a JSON string";
          EXPECT_FALSE(HasSurrogate(s)) << what << ", step " << step << ": id " << id << " (" << Hex(s) << ")";
          if (s.size() == 1 && s[0] != '"' && s[0] != '\\') inside.push_back(id);
        }
        if (inside.empty()) break;
        ASSERT_TRUE(c->Accept(inside[rng() % inside.size()]).ok()) << what;
      }
      std::unique_ptr<TokenConstraint> fresh = After(spec, sc.prefix);
      ASSERT_NE(fresh, nullptr) << what;
      ExpectNoSurrogateAfterEd(*fresh, what);
    }
  }
}

// Negated classes and '.' in regexes and EBNF grammars skip the surrogates too.
TEST_F(OutputValidityTest, NegatedClassesAdmitNoSurrogate) {
  const std::pair<ConstraintSpec, const char*> cases[] = {
      {Spec(Kind::kRegex, "[^a]*"), ""},
      {Spec(Kind::kRegex, ".{0,40}"), ""},
      {Spec(Kind::kRegex, "x[^\"]{1,9}"), "x"},
      {Spec(Kind::kRegex, "\\W+"), ""},
      {Spec(Kind::kGrammar, "root ::= [^a]*\n"), ""},
      {Spec(Kind::kGrammar, "root ::= \"x\" [^\\n]{2,9} \"y\"\n"), "x"},
      {Spec(Kind::kGrammar, "root ::= [\\u0800-\\uffff]+\n"), ""},
  };
  for (const auto& [spec, prefix] : cases) {
    std::unique_ptr<TokenConstraint> c = After(spec, prefix);
    ASSERT_NE(c, nullptr) << spec.text;
    std::vector<int32_t> allowed = Allowed(*c);
    ASSERT_FALSE(allowed.empty()) << spec.text;
    for (int32_t id : allowed) {
      EXPECT_FALSE(HasSurrogate((*decoded_)[id])) << spec.text << ": id " << id << " (" << Hex((*decoded_)[id]) << ")";
    }
    ExpectNoSurrogateAfterEd(*c, spec.text);
  }
}

bool IsJsonWhitespace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// With any_whitespace, a gap takes whitespace tokens up to kMaxJsonWhitespace characters in
// all, then only what the JSON goes on with.
TEST_F(OutputValidityTest, AnyWhitespaceRunsAreBounded) {
  const char kSchema[] =
      R"({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})";
  const std::pair<ConstraintSpec, const char*> cases[] = {
      {Spec(Kind::kJsonObject, "", true), "{"},
      {Spec(Kind::kJsonSchema, kSchema, true), "{"},
      {Spec(Kind::kJsonSchema, kSchema, true), "{\"name\""},
      {Spec(Kind::kJsonSchema, kSchema, true), "{\"name\":\"x\""},
  };
  for (const auto& [spec, prefix] : cases) {
    const std::string what = spec.text + " after " + prefix;
    std::unique_ptr<TokenConstraint> c = After(spec, prefix);
    ASSERT_NE(c, nullptr) << what;
    // A newline, then spaces: at each point a run of exactly the remaining length is allowed
    // and one longer is not.
    const int32_t newline = IdOf("\n");
    const int32_t space = IdOf(" ");
    for (int used = 0; used < kMaxJsonWhitespace; ++used) {
      std::vector<int32_t> allowed = Allowed(*c);
      const int left = kMaxJsonWhitespace - used;
      auto allowed_run = [&](int n) {
        auto it = ids_->find(std::string(static_cast<size_t>(n), ' '));
        return it == ids_->end() ||
               std::find(allowed.begin(), allowed.end(), it->second) != allowed.end();
      };
      EXPECT_TRUE(allowed_run(left)) << what << ": " << used << " used, a run of " << left << " refused";
      if (ids_->count(std::string(static_cast<size_t>(left + 1), ' '))) {
        EXPECT_FALSE(allowed_run(left + 1)) << what << ": " << used << " used, a run of " << left + 1 << " allowed";
      }
      ASSERT_TRUE(c->Accept(used == 0 ? newline : space).ok()) << what << ": " << used << " used";
    }
    std::vector<int32_t> allowed = Allowed(*c);
    ASSERT_FALSE(allowed.empty()) << what;
    for (int32_t id : allowed) {
      const std::string& s = (*decoded_)[id];
      EXPECT_TRUE(s.empty() || !IsJsonWhitespace(s[0]))
          << what << ": " << kMaxJsonWhitespace << " whitespace characters, then id " << id << " (" << Hex(s) << ")";
    }
  }
}

// Compact JSON (any_whitespace false) has no whitespace between tokens at all.
TEST_F(OutputValidityTest, CompactJsonHasNoWhitespaceGap) {
  std::unique_ptr<TokenConstraint> c = After(Spec(Kind::kJsonObject, ""), "{");
  ASSERT_NE(c, nullptr);
  for (int32_t id : Allowed(*c)) {
    const std::string& s = (*decoded_)[id];
    EXPECT_TRUE(s.empty() || !IsJsonWhitespace(s[0])) << "id " << id << " (" << Hex(s) << ")";
  }
}

}  // namespace
}  // namespace phi::worker
