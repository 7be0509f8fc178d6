// Load any bytes as tokenizer.json (seeded with real ones): the loader must return a Status,
// never crash, throw or hang; a tokenizer it accepts must encode and decode.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "services/tokenizer/tokenizer_loader.h"
#include "tests/fuzz/fuzz_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace phi::tokenizer;
  std::string_view json(reinterpret_cast<const char*>(data), size);
  auto tok = LoadTokenizerJson(json, "fuzz/tokenizer.json");
  if (!tok.ok()) {
    FUZZ_CHECK(tok.status().message().find("fuzz/tokenizer.json") != absl::string_view::npos);
    return 0;
  }
  const std::string_view text = "Hello <|im_end|> world\n\tdef f(): return 42 # \xE4\xB8\xAD\xF0\x9F\x98\x80";
  for (bool special : {true, false}) {
    auto enc = (*tok)->Encode(text, {.parse_special = special});
    FUZZ_CHECK(enc.ok());
    FUZZ_CHECK((*tok)->Decode(enc->ids).ok());
  }
  return 0;
}
