// Shared by the grammar tests: the tokenizers they compile against, constraint specs, a
// byte-level decoder of token ids (independent of xgrammar's), and a random walk through
// allowed tokens.
#ifndef PHI_TESTS_UNIT_WORKER_GRAMMAR_GRAMMAR_TEST_UTIL_H_
#define PHI_TESTS_UNIT_WORKER_GRAMMAR_GRAMMAR_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "services/worker/grammar/constraint_compiler.h"
#include "services/worker/grammar/tokenizer_vocab.h"

namespace phi::worker::testing {

// Phi-1.5's real GPT-2 vocabulary (50,297 ids, 51,200 rows, eos 50256 and 50296) and a small
// trained one; ctest makes both with tools/make_tokenizer.py (fixture worker_grammar_tokenizers).
struct TestVocab {
  std::string tokenizer_json;
  int32_t vocab_size;  // the model's rows: more than the tokenizer's ids
  std::vector<int32_t> eos_ids;
};

inline std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// PHI_TEST_TOKENIZER_DIR holds gpt2/ and small/; run by hand without it, the GPT-2 tests use
// models/phi-1_5-random-bf16 (./phi make-model --preset phi-1_5) and the small ones skip.
inline TestVocab Gpt2Vocab() {
  const std::string dir = EnvOr("PHI_TEST_TOKENIZER_DIR", "");
  return {dir.empty() ? PHI_SOURCE_DIR "/models/phi-1_5-random-bf16/tokenizer.json" : dir + "/gpt2/tokenizer.json",
          51200, {50256, 50296}};
}

// make_tokenizer.py --vocab-size 1024: ids 0..1023 BPE (1023 <|endoftext|>), 1024..1063 added
// (1062 <|im_start|>, 1063 <|im_end|>).
inline TestVocab SmallVocab() {
  const std::string dir = EnvOr("PHI_TEST_TOKENIZER_DIR", "");
  return {dir.empty() ? "" : dir + "/small/tokenizer.json", 1088, {1023, 1063}};
}

inline ConstraintCompilerOptions Options(const TestVocab& v, metrics::Registry* registry) {
  ConstraintCompilerOptions o;
  o.tokenizer_json_path = v.tokenizer_json;
  o.vocab_size = v.vocab_size;
  o.eos_token_ids = v.eos_ids;
  o.registry = registry;
  return o;
}

inline ConstraintSpec Spec(ConstraintSpec::Kind kind, std::string text = "", bool any_whitespace = false) {
  ConstraintSpec s;
  s.kind = kind;
  s.text = std::move(text);
  s.any_whitespace = any_whitespace;
  return s;
}

// The bytes each id stands for ("" for ids no token has, special tokens, and rows past the
// tokenizer), by inverting ByteLevelEncode.
inline std::vector<std::string> DecodedVocab(const TestVocab& v) {
  auto encoded = LoadByteLevelVocab(v.tokenizer_json, v.eos_ids);
  EXPECT_TRUE(encoded.ok()) << encoded.status();
  std::map<std::string, char> char_byte;
  for (int b = 0; b < 256; ++b) char_byte[ByteLevelEncode(std::string(1, static_cast<char>(b)))] = static_cast<char>(b);
  std::vector<std::string> out(v.vocab_size);
  for (size_t id = 0; id < encoded->size() && id < out.size(); ++id) {
    const std::string& s = (*encoded)[id];
    std::string bytes;
    for (size_t i = 0; i < s.size();) {
      auto lead = static_cast<unsigned char>(s[i]);
      size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
      auto it = char_byte.find(s.substr(i, len));
      if (it == char_byte.end()) {
        ADD_FAILURE() << "id " << id << " is not byte-level: " << s;
        break;
      }
      bytes += it->second;
      i += len;
    }
    out[id] = bytes;
  }
  return out;
}

inline std::vector<int32_t> AllowedIds(const std::vector<uint32_t>& words, int32_t vocab_size) {
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < vocab_size; ++id) {
    if (TokenAllowed(words, id)) ids.push_back(id);
  }
  return ids;
}

struct Walk {
  std::string text;             // decoded bytes of the accepted tokens (eos excluded)
  std::vector<int32_t> tokens;  // eos included
  bool terminated = false;
};

// Samples allowed tokens until the constraint terminates or `max_steps`. Uniform sampling
// over 50k ids almost never closes a string, so with probability 2/3 the walk prefers an
// allowed eos or a token made only of closing characters (" } ]), which ends walks quickly.
inline Walk RandomWalk(TokenConstraint& c, const std::vector<std::string>& decoded, const TestVocab& v,
                       std::mt19937& rng, int max_steps = 400) {
  Walk w;
  std::vector<uint32_t> words(TokenMaskWords(v.vocab_size));
  for (int step = 0; step < max_steps && !c.IsTerminated(); ++step) {
    c.FillNextTokenMask(words);
    std::vector<int32_t> allowed = AllowedIds(words, v.vocab_size);
    if (allowed.empty()) {
      ADD_FAILURE() << "no token allowed after \"" << w.text << "\"";
      return w;
    }
    std::vector<int32_t> closers;
    for (int32_t id : allowed) {
      bool eos = std::find(v.eos_ids.begin(), v.eos_ids.end(), id) != v.eos_ids.end();
      const std::string& s = decoded[id];
      if (eos || (!s.empty() && s.find_first_not_of("\"}]") == std::string::npos)) closers.push_back(id);
    }
    const std::vector<int32_t>& pool = !closers.empty() && rng() % 3 != 0 ? closers : allowed;
    int32_t id = pool[rng() % pool.size()];
    absl::Status s = c.Accept(id);
    if (!s.ok()) {
      ADD_FAILURE() << "Accept(" << id << ") of an allowed id: " << s;
      return w;
    }
    w.tokens.push_back(id);
    if (std::find(v.eos_ids.begin(), v.eos_ids.end(), id) == v.eos_ids.end()) w.text += decoded[id];
  }
  w.terminated = c.IsTerminated();
  return w;
}

}  // namespace phi::worker::testing

#endif  // PHI_TESTS_UNIT_WORKER_GRAMMAR_GRAMMAR_TEST_UTIL_H_
