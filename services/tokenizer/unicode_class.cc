#include "services/tokenizer/unicode_class.h"

#include <algorithm>
#include <array>
#include <memory>

namespace phi::tokenizer {
namespace {

struct Range {
  char32_t first;
  char32_t last;
  CharClass cls;
};

constexpr Range kRanges[] = {
#include "services/tokenizer/unicode_tables.inc"
};

// The BMP holds almost all text; a flat 64 KiB table makes its lookups one load.
struct BmpTable {
  std::array<CharClass, 0x10000> cls{};
  BmpTable() {
    for (const Range& r : kRanges) {
      if (r.first >= 0x10000) break;
      for (char32_t cp = r.first; cp <= r.last && cp < 0x10000; ++cp) cls[cp] = r.cls;
    }
  }
};

const BmpTable& Bmp() {
  static const BmpTable* table = new BmpTable();
  return *table;
}

}  // namespace

CharClass ClassifyCodepoint(char32_t cp) {
  if (cp < 0x10000) return Bmp().cls[cp];
  const Range* end = kRanges + sizeof(kRanges) / sizeof(kRanges[0]);
  const Range* it =
      std::upper_bound(kRanges, end, cp, [](char32_t v, const Range& r) { return v < r.first; });
  if (it == kRanges) return CharClass::kOther;
  --it;
  return cp <= it->last ? it->cls : CharClass::kOther;
}

}  // namespace phi::tokenizer
