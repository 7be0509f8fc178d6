// Added tokens (specials such as <|im_end|> and CodeGen's runs of spaces/tabs) and the split of
// text around them, with Hugging Face's matching rules: leftmost-longest, non-overlapping, first
// over the raw text for tokens with normalized=false, then over the remaining pieces for tokens
// with normalized=true; single_word, lstrip and rstrip as in tokenizers' added_vocabulary.rs.
#ifndef PHI_SERVICES_TOKENIZER_ADDED_VOCABULARY_H_
#define PHI_SERVICES_TOKENIZER_ADDED_VOCABULARY_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace phi::tokenizer {

struct AddedToken {
  uint32_t id = 0;
  std::string content;
  bool special = false;
  bool normalized = true;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// A piece of the input: bytes [begin, end) and the added token it is, or kNoToken for text that
// goes through the pre-tokenizer and the model.
struct TextSplit {
  static constexpr uint32_t kNoToken = 0xFFFFFFFFu;
  size_t begin;
  size_t end;
  uint32_t token = kNoToken;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  explicit AddedVocabulary(std::vector<AddedToken> tokens);

  // Splits valid UTF-8 text into pieces (appended to *out, covering the text in order). With
  // parse_special false, matches of special tokens are skipped, so their text is encoded as plain
  // text (Hugging Face's encode_special_tokens).
  void Split(std::string_view text, bool parse_special, std::vector<TextSplit>* out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool empty() const { return tokens_.empty(); }

 private:
  // Byte trie of token contents for leftmost-longest search.
  struct Trie {
    std::vector<std::array<int32_t, 256>> next;  // node -> child per byte, -1: none
    std::vector<int32_t> token;                  // node -> index in tokens_, -1: none
    std::array<bool, 256> first{};               // bytes that start some token
    Trie();
    void Insert(std::string_view s, int32_t token_index);
    bool empty() const { return next.size() == 1; }
  };
  struct Match {
    size_t begin;
    size_t end;
    int32_t token_index;
  };
  // First leftmost-longest match in text[from..); false when none.
  bool FindMatch(const Trie& trie, std::string_view text, size_t from, Match* m) const;
  void SplitWith(const Trie& trie, std::string_view text, size_t base, bool parse_special,
                 std::vector<TextSplit>* out) const;

  std::vector<AddedToken> tokens_;
  Trie raw_;         // normalized == false
  Trie normalized_;  // normalized == true (no normalizer is supported, so the same text)
};

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_ADDED_VOCABULARY_H_
