#include "services/tokenizer/stream_decoder.h"

#include "services/tokenizer/utf8.h"

namespace phi::tokenizer {

absl::Status StreamDecoder::Push(absl::Span<const uint32_t> ids, std::string* delta) {
  for (uint32_t id : ids) {
    if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) continue;
    // An id with no token (a padded output row of the model) decodes to nothing, as in HF.
    if (const std::string* b = tokenizer_.TokenBytes(id)) pending_.append(*b);
  }
  ids_seen_ += ids.size();
  // Everything before an incomplete trailing character decodes the same whatever comes next:
  // lossy UTF-8 decoding decides each position from the bytes up to the end of its sequence.
  size_t ready = pending_.size() - IncompleteUtf8Tail(pending_);
  AppendUtf8Lossy(std::string_view(pending_).substr(0, ready), delta);
  pending_.erase(0, ready);
  return absl::OkStatus();
}

void StreamDecoder::Finish(std::string* delta) {
  AppendUtf8Lossy(pending_, delta);
  pending_.clear();
  ids_seen_ = 0;
}

}  // namespace phi::tokenizer
