#include "services/tokenizer/utf8.h"

namespace phi::tokenizer {

int Utf8SequenceLength(std::string_view s, size_t i, int* valid_prefix) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  unsigned char b0 = p[i];
  *valid_prefix = 0;
  if (b0 < 0x80) {
    *valid_prefix = 1;
    return 1;
  }
  int len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;   // no overlong forms
    if (b0 == 0xED) hi = 0x9F;   // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;   // no overlong forms
    if (b0 == 0xF4) hi = 0x8F;   // nothing above U+10FFFF
  } else {
    return 0;  // continuation byte or never-valid lead byte: a subpart of length 1
  }
  *valid_prefix = 1;
  if (i + 1 >= n) return 0;
  if (p[i + 1] < lo || p[i + 1] > hi) return 0;
  *valid_prefix = 2;
  for (int k = 2; k < len; ++k) {
    if (i + k >= n) return 0;
    if ((p[i + k] & 0xC0) != 0x80) return 0;
    *valid_prefix = k + 1;
  }
  return len;
}

size_t FindInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // ASCII fast path, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    int prefix;
    int len = Utf8SequenceLength(s, i, &prefix);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void AppendUtf8Lossy(std::string_view s, std::string* out) {
  size_t i = 0;
  size_t run_start = 0;  // start of the pending run of valid bytes
  const size_t n = s.size();
  while (i < n) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int prefix;
    int len = Utf8SequenceLength(s, i, &prefix);
    if (len > 0) {
      i += len;
      continue;
    }
    out->append(s.data() + run_start, i - run_start);
    out->append(kReplacementChar);
    i += prefix > 0 ? prefix : 1;
    run_start = i;
  }
  out->append(s.data() + run_start, n - run_start);
}

size_t IncompleteUtf8Tail(std::string_view s) {
  const size_t n = s.size();
  // A sequence is at most 4 bytes: only a lead byte in the last 3 positions can be incomplete.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    size_t i = n - back;
    unsigned char b = static_cast<unsigned char>(s[i]);
    if ((b & 0xC0) == 0x80) continue;  // continuation: keep looking for the lead byte
    if (b < 0x80) return 0;
    int prefix;
    int len = Utf8SequenceLength(s, i, &prefix);
    if (len != 0) return 0;                        // complete sequence
    return static_cast<size_t>(prefix) == back ? back : 0;  // all remaining bytes still valid
  }
  return 0;
}

}  // namespace phi::tokenizer
