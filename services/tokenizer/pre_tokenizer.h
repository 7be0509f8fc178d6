// The GPT-2 split pattern, hand-written instead of a regex engine (it is the encoder's hot loop):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// ref: openai/gpt-2 encoder.py; Hugging Face tokenizers pre_tokenizers/byte_level.rs. The
// contractions are case-sensitive there too ("'S" is punctuation followed by a letter).
#ifndef PHI_SERVICES_TOKENIZER_PRE_TOKENIZER_H_
#define PHI_SERVICES_TOKENIZER_PRE_TOKENIZER_H_

#include <array>
#include <cstddef>
#include <string_view>

#include "services/tokenizer/unicode_class.h"
#include "services/tokenizer/utf8.h"

namespace phi::tokenizer {
namespace internal {

struct AsciiClasses {
  std::array<CharClass, 128> cls{};
  constexpr AsciiClasses() {
    for (int c = 0; c < 128; ++c) {
      CharClass k = CharClass::kOther;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = CharClass::kLetter;
      else if (c >= '0' && c <= '9') k = CharClass::kNumber;
      else if (c == ' ' || (c >= 0x09 && c <= 0x0D)) k = CharClass::kSpace;
      else if (c == '_') k = CharClass::kConnector;
      cls[c] = k;
    }
  }
};
inline constexpr AsciiClasses kAscii{};

// Class of the character at p (valid UTF-8); *len receives its byte length. Marks and connectors
// are folded into kOther: the split pattern does not distinguish them.
inline CharClass SplitClassAt(const unsigned char* p, int* len) {
  if (p[0] < 0x80) {
    *len = 1;
    CharClass c = kAscii.cls[p[0]];
    return c == CharClass::kConnector ? CharClass::kOther : c;
  }
  char32_t cp;
  *len = DecodeUtf8(p, &cp);
  CharClass c = ClassifyCodepoint(cp);
  return (c == CharClass::kMark || c == CharClass::kConnector) ? CharClass::kOther : c;
}

}  // namespace internal

// Splits valid UTF-8 `text` into GPT-2 pre-tokens, calling emit(begin, end) with byte offsets for
// each piece in order. The pieces cover the text exactly.
template <typename Emit>
void SplitGpt2(std::string_view text, Emit&& emit) {
  using internal::SplitClassAt;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Contractions come first in the alternation.
    if (p[i] == '\'' && i + 1 < n) {
      unsigned char a = p[i + 1];
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        unsigned char b = p[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    int len;
    CharClass cls = SplitClassAt(p + i, &len);
    size_t j = i + len;  // end of the part matched so far
    if (p[i] == ' ' && j < n) {
      // " ?X+": an optional single U+0020 before a run of letters, numbers or other symbols.
      int len2;
      CharClass next = SplitClassAt(p + j, &len2);
      if (next != CharClass::kSpace) {
        cls = next;
        j += len2;
      }
    }
    if (cls != CharClass::kSpace) {
      while (j < n) {
        int l;
        CharClass c = SplitClassAt(p + j, &l);
        if (c != cls) break;
        j += l;
      }
      emit(i, j);
      i = j;
      continue;
    }
    // Whitespace run starting at i: "\s+(?!\S)" takes all of it at the end of the text, else
    // all but its last character (which then starts the next piece); a single whitespace
    // character before non-space is matched by "\s+".
    size_t last_start = i;
    j = i;
    while (j < n) {
      int l;
      if (SplitClassAt(p + j, &l) != CharClass::kSpace) break;
      last_start = j;
      j += l;
    }
    if (j == n || last_start == i) {
      emit(i, j);
      i = j;
    } else {
      emit(i, last_start);
      i = last_start;
    }
  }
}

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_PRE_TOKENIZER_H_
