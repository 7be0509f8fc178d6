// The vocabulary xgrammar compiles grammars against, read from a Hugging Face tokenizer.json
// with a GPT-2 byte-level model: one encoded string per token id.
#ifndef PHI_SERVICES_WORKER_GRAMMAR_TOKENIZER_VOCAB_H_
#define PHI_SERVICES_WORKER_GRAMMAR_TOKENIZER_VOCAB_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace phi::worker {

// Encoded strings indexed by id (xgrammar's VocabType::BYTE_LEVEL form): model.vocab as is;
// non-special added tokens (e.g. runs of spaces) re-encoded byte-level so they decode to their
// exact text; special added tokens other than `stop_ids`, and ids no token has, become "",
// which xgrammar never allows. INVALID_ARGUMENT naming the file when it cannot be read, is not
// JSON, or its decoder is not ByteLevel.
absl::StatusOr<std::vector<std::string>> LoadByteLevelVocab(const std::string& tokenizer_json_path,
                                                            std::span<const int32_t> stop_ids);

// GPT-2's bytes_to_unicode applied to `bytes`, UTF-8 encoded (what ByteLevel decoding inverts).
std::string ByteLevelEncode(std::string_view bytes);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_GRAMMAR_TOKENIZER_VOCAB_H_
