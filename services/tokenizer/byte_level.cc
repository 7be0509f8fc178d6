#include "services/tokenizer/byte_level.h"

#include <array>

#include "services/tokenizer/utf8.h"

namespace phi::tokenizer {
namespace {

struct ByteMap {
  std::array<char32_t, 256> to_char{};
  std::array<int, 512> to_byte{};  // every mapped character is below U+0200
  ByteMap() {
    to_byte.fill(-1);
    // Printable bytes map to themselves; the others to U+0100 + n in byte order.
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t c = printable ? char32_t(b) : char32_t(0x100 + n++);
      to_char[b] = c;
      to_byte[c] = b;
    }
  }
};

const ByteMap& Map() {
  static const ByteMap* map = new ByteMap();
  return *map;
}

}  // namespace

char32_t ByteToChar(unsigned char b) { return Map().to_char[b]; }

int CharToByte(char32_t c) { return c < 512 ? Map().to_byte[c] : -1; }

std::string ByteLevelTokenBytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  const auto* p = reinterpret_cast<const unsigned char*>(token.data());
  size_t i = 0;
  while (i < token.size()) {
    int prefix;
    if (Utf8SequenceLength(token, i, &prefix) == 0) return std::string(token);
    char32_t cp;
    i += DecodeUtf8(p + i, &cp);
    int b = CharToByte(cp);
    if (b < 0) return std::string(token);
    bytes.push_back(static_cast<char>(b));
  }
  return bytes;
}

std::string BytesToByteLevelString(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) AppendUtf8(ByteToChar(b), &out);
  return out;
}

}  // namespace phi::tokenizer
