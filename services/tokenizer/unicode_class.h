// Unicode character classes for the GPT-2 pre-tokenizer split (\p{L}, \p{N}, \s) and the
// `\w` test of single_word added tokens.
#ifndef PHI_SERVICES_TOKENIZER_UNICODE_CLASS_H_
#define PHI_SERVICES_TOKENIZER_UNICODE_CLASS_H_

#include <cstdint>

namespace phi::tokenizer {

enum class CharClass : uint8_t {
  kOther = 0,
  kLetter,     // \p{L}
  kNumber,     // \p{N}
  kSpace,      // \s: Unicode White_Space (Oniguruma's definition, as tokenizers uses)
  kMark,       // \p{M}: "other" for the split pattern, a word character for \w
  kConnector,  // \p{Pc}, ZWNJ, ZWJ: "other" for the split pattern, word characters for \w
};

// Class of a Unicode scalar value; O(1) in the BMP, binary search above it.
CharClass ClassifyCodepoint(char32_t cp);

// `\w` in Rust's regex crate: alphanumeric, marks, connector punctuation, joiners.
inline bool IsWordClass(CharClass c) {
  return c == CharClass::kLetter || c == CharClass::kNumber || c == CharClass::kMark ||
         c == CharClass::kConnector;
}

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_UNICODE_CLASS_H_
