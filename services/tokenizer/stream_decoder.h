// Incremental decoding for token streams: text deltas whose concatenation equals
// Tokenizer::Decode of all ids, never splitting a UTF-8 character. Bytes of an incomplete
// character wait for the next ids; Finish() turns a dangling remainder into U+FFFD, which is what
// Hugging Face's lossy decode of the whole sequence gives.
#ifndef PHI_SERVICES_TOKENIZER_STREAM_DECODER_H_
#define PHI_SERVICES_TOKENIZER_STREAM_DECODER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "services/tokenizer/tokenizer.h"

namespace phi::tokenizer {

class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Appends the text completed by `ids` to *delta (possibly nothing). An unknown id is
  // INVALID_ARGUMENT naming it and its position in the whole stream; the state is unchanged.
  absl::Status Push(absl::Span<const uint32_t> ids, std::string* delta);
  // Appends whatever is left (U+FFFD for an incomplete character) and resets the decoder.
  void Finish(std::string* delta);

  size_t ids_seen() const { return ids_seen_; }
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
  size_t ids_seen_ = 0;
};

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_STREAM_DECODER_H_
