// Encode any bytes. Invalid UTF-8 must be refused at exactly the first bad byte; valid text must
// round-trip through Decode byte for byte (byte-level BPE loses nothing), with offsets that tile
// the input, in both special-token modes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "services/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace phi::tokenizer;
  const Tokenizer& tok = FuzzTokenizer();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  size_t bad = FindInvalidUtf8(text);
  for (bool parse_special : {true, false}) {
    auto enc = tok.Encode(text, {.parse_special = parse_special, .offsets = true});
    if (bad != std::string_view::npos) {
      FUZZ_CHECK(!enc.ok());
      FUZZ_CHECK(enc.status().code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(enc.status().message().find("byte offset " + std::to_string(bad)) != absl::string_view::npos);
      continue;
    }
    FUZZ_CHECK(enc.ok());
    FUZZ_CHECK(enc->offsets.size() == enc->ids.size());
    uint32_t pos = 0;
    for (const auto& [b, e] : enc->offsets) {
      FUZZ_CHECK(b == pos && e >= b);
      pos = e;
    }
    FUZZ_CHECK(pos == size);
    auto dec = tok.Decode(enc->ids);
    FUZZ_CHECK(dec.ok());
    FUZZ_CHECK(*dec == text);
    if (size == 0) FUZZ_CHECK(enc->ids.empty());
  }
  return 0;
}
