// libFuzzer: the tokenizer's DecodeStream state machine (StreamDecoder, as DecodeStreamCall in
// services/tokenizer/service/tokenizer_service.cc drives it) under any sequence of operations:
// push a batch of ids (in the vocabulary, just past it as padded output rows are, or any uint32),
// push an empty batch (a keep-alive), finish the stream, start the next with the other
// skip_special_tokens. decode_fuzzer covers one in-vocabulary stream; this adds ids anywhere in
// uint32, Finish mid-stream, reuse after Finish and empty pushes. Checked for every stream: each
// delta is valid UTF-8, at most 3 bytes (one incomplete character) wait, ids_seen counts the
// ids, and the deltas plus Finish equal Tokenizer::Decode of the whole stream.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "services/tokenizer/stream_decoder.h"
#include "services/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_tokenizer.h"

namespace {

using namespace phi::tokenizer;

struct Input {
  const uint8_t* p;
  size_t n;
  bool Empty() const { return n == 0; }
  uint8_t Byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

// Mostly ids of the vocabulary (and a few rows past it), sometimes any uint32.
uint32_t NextId(Input& in, uint32_t vocab) {
  const uint8_t tag = in.Byte();
  if (tag < 0xF0) return ((uint32_t{tag} << 8) | in.Byte()) % (vocab + 8);
  uint32_t id = 0;
  for (int i = 0; i < 4; ++i) id = (id << 8) | in.Byte();
  return id;
}

void FinishStream(StreamDecoder& stream, const std::vector<uint32_t>& ids, bool skip, std::string* got) {
  const Tokenizer& tok = FuzzTokenizer();
  stream.Finish(got);
  FUZZ_CHECK(FindInvalidUtf8(*got) == std::string_view::npos);
  FUZZ_CHECK(stream.ids_seen() == 0 && stream.pending_bytes() == 0);
  auto want = tok.Decode(ids, skip);
  FUZZ_CHECK(want.ok());
  FUZZ_CHECK(*got == *want);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tok = FuzzTokenizer();
  const uint32_t vocab = static_cast<uint32_t>(tok.vocab_size());
  Input in{data, size};
  bool skip = (in.Byte() & 1) != 0;
  std::optional<StreamDecoder> stream(std::in_place, tok, skip);
  std::vector<uint32_t> ids;  // the current stream's
  std::string got;
  while (!in.Empty()) {
    const uint8_t op = in.Byte();
    switch (op & 3) {
      case 0:
      case 1: {  // one DecodeStream message: 0 to 15 ids
        std::vector<uint32_t> batch;
        for (int i = 0, count = op >> 4; i < count && !in.Empty(); ++i) batch.push_back(NextId(in, vocab));
        std::string delta;
        FUZZ_CHECK(stream->Push(batch, &delta).ok());
        FUZZ_CHECK(FindInvalidUtf8(delta) == std::string_view::npos);
        FUZZ_CHECK(stream->pending_bytes() <= 3);
        ids.insert(ids.end(), batch.begin(), batch.end());
        FUZZ_CHECK(stream->ids_seen() == ids.size());
        got += delta;
        break;
      }
      case 2:  // the client closes its side: flush, and the same decoder serves again
        FinishStream(*stream, ids, skip, &got);
        ids.clear();
        got.clear();
        break;
      default:  // a new stream with the other skip_special_tokens
        FinishStream(*stream, ids, skip, &got);
        ids.clear();
        got.clear();
        skip = !skip;
        stream.emplace(tok, skip);
        break;
    }
  }
  FinishStream(*stream, ids, skip, &got);
  return 0;
}
