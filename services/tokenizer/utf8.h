// UTF-8 helpers with the exact semantics the Hugging Face decoder relies on (Rust's
// String::from_utf8_lossy: one U+FFFD per maximal invalid subpart).
#ifndef PHI_SERVICES_TOKENIZER_UTF8_H_
#define PHI_SERVICES_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace phi::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence at s[i..] (1..4), or 0 if the bytes there are not a complete
// valid sequence. `valid_prefix` receives the number of bytes that are a valid but possibly
// incomplete start (the "maximal subpart" of the Unicode standard, >= 1 when non-zero is returned
// or when the sequence is merely truncated).
int Utf8SequenceLength(std::string_view s, size_t i, int* valid_prefix);

// Offset of the first byte that is not part of valid UTF-8, or npos when all of s is valid.
size_t FindInvalidUtf8(std::string_view s);

// Decodes the valid sequence at s[i..] (which the caller has validated); returns its length.
inline int DecodeUtf8(const unsigned char* p, char32_t* cp) {
  unsigned char b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  if (b0 < 0xE0) {
    *cp = (char32_t(b0 & 0x1F) << 6) | (p[1] & 0x3F);
    return 2;
  }
  if (b0 < 0xF0) {
    *cp = (char32_t(b0 & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    return 3;
  }
  *cp = (char32_t(b0 & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) | (char32_t(p[2] & 0x3F) << 6) |
        (p[3] & 0x3F);
  return 4;
}

void AppendUtf8(char32_t cp, std::string* out);

// Appends s to out, replacing each maximal invalid subpart by U+FFFD.
void AppendUtf8Lossy(std::string_view s, std::string* out);

// Number of trailing bytes of s (0..3) that form a valid but incomplete UTF-8 sequence, i.e.
// bytes that a later byte could still complete.
size_t IncompleteUtf8Tail(std::string_view s);

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_UTF8_H_
