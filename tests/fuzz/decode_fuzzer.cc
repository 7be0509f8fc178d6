// Decode any id sequence (two bytes per id, modulo the vocabulary; the first byte picks the
// streaming chunk size and skip_special_tokens). Streaming deltas must each be valid UTF-8 and
// add up to Decode; Decode's output must be valid UTF-8 that Encode accepts.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "services/tokenizer/stream_decoder.h"
#include "services/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace phi::tokenizer;
  if (size < 1) return 0;
  const Tokenizer& tok = FuzzTokenizer();
  const size_t chunk = (data[0] & 7) + 1;
  const bool skip = data[0] & 8;
  std::vector<uint32_t> ids;
  for (size_t i = 1; i + 1 < size; i += 2) {
    ids.push_back((uint32_t{data[i]} << 8 | data[i + 1]) % tok.vocab_size());
  }
  auto want = tok.Decode(ids, skip);
  FUZZ_CHECK(want.ok());
  FUZZ_CHECK(FindInvalidUtf8(*want) == std::string_view::npos);
  StreamDecoder stream(tok, skip);
  std::string got;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    std::string delta;
    size_t n = std::min(chunk, ids.size() - i);
    FUZZ_CHECK(stream.Push({ids.data() + i, n}, &delta).ok());
    FUZZ_CHECK(FindInvalidUtf8(delta) == std::string_view::npos);
    got += delta;
  }
  stream.Finish(&got);
  FUZZ_CHECK(got == *want);
  FUZZ_CHECK(tok.Encode(*want).ok());
  // An id past the vocabulary (a padded output row) decodes to nothing, as in Hugging Face.
  std::vector<uint32_t> padded = ids;
  padded.push_back(tok.vocab_size() + data[0]);
  auto with_padding = tok.Decode(padded, skip);
  FUZZ_CHECK(with_padding.ok() && *with_padding == *want);
  return 0;
}
