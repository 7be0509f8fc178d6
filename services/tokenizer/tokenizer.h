// A Hugging Face-compatible byte-level BPE tokenizer: added tokens, the ByteLevel pre-tokenizer
// (GPT-2 split), the BPE model and the ByteLevel decoder. Immutable after construction and safe
// to share between threads. Load one with tokenizer_loader.h.
#ifndef PHI_SERVICES_TOKENIZER_TOKENIZER_H_
#define PHI_SERVICES_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/tokenizer/added_vocabulary.h"
#include "services/tokenizer/bpe_model.h"

namespace phi::tokenizer {

// Token ids with well-known roles, read from tokenizer_config.json, special_tokens_map.json and
// generation_config.json. Absent roles stay empty.
struct SpecialRoles {
  std::optional<uint32_t> bos;
  std::optional<uint32_t> eos;
  std::optional<uint32_t> pad;
  std::optional<uint32_t> unk;
  std::optional<uint32_t> im_start;
  std::optional<uint32_t> im_end;
  // Ids that end generation: generation_config.json's eos_token_id (one or a list) and eos.
  std::vector<uint32_t> stop_ids;
};

struct PreTokenizerOptions {
  bool add_prefix_space = false;  // ByteLevel add_prefix_space
  bool use_regex = true;          // ByteLevel use_regex (the GPT-2 split)
};

struct EncodeOptions {
  // true: added special tokens in the text become their ids. false: their text is plain text
  // (message content must be encoded this way so that users cannot forge control tokens).
  bool parse_special = true;
  // Fill Encoding::offsets with byte ranges of the input.
  bool offsets = false;
};

struct Encoding {
  std::vector<uint32_t> ids;
  // [begin, end) byte offsets into the input per id (only with EncodeOptions::offsets). A token
  // that covers part of a multi-byte character covers those bytes only.
  std::vector<std::pair<uint32_t, uint32_t>> offsets;
};

// One element of a segment list: plain text (never parsed for special tokens) or a special token
// named by its content ("<|im_start|>") or its role ("bos", "eos", "pad", "unk", "im_start",
// "im_end").
struct Segment {
  enum class Kind { kText, kSpecial };
  Kind kind = Kind::kText;
  std::string value;
  static Segment Text(std::string s) { return {Kind::kText, std::move(s)}; }
  static Segment Special(std::string s) { return {Kind::kSpecial, std::move(s)}; }
};

class Tokenizer {
 public:
  Tokenizer(BpeModel model, std::vector<AddedToken> added, PreTokenizerOptions pre);

  // Text (UTF-8; invalid input is INVALID_ARGUMENT naming the byte offset) -> ids.
  absl::StatusOr<Encoding> Encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Appends to *out instead of returning a new Encoding; offsets are shifted by `offset_base`.
  absl::Status EncodeAppend(std::string_view text, const EncodeOptions& options, Encoding* out,
                            uint32_t offset_base = 0) const;
  absl::StatusOr<std::vector<Encoding>> EncodeBatch(absl::Span<const std::string_view> texts,
                                                    const EncodeOptions& options = {}) const;
  // Segments in order; offsets (when asked) index the concatenation of the text segments and the
  // special tokens' contents.
  absl::StatusOr<Encoding> EncodeSegments(absl::Span<const Segment> segments,
                                          bool offsets = false) const;

  // Ids -> text, invalid UTF-8 from partial tokens replaced by U+FFFD as Hugging Face does. An id
  // with no token (past the vocabulary: a model's padded output rows, which greedy decoding can
  // pick) decodes to nothing, as Hugging Face's decode skips it.
  absl::StatusOr<std::string> Decode(absl::Span<const uint32_t> ids,
                                     bool skip_special_tokens = false) const;

  // Bytes one id decodes to, or nullptr for an id outside the vocabulary.
  const std::string* TokenBytes(uint32_t id) const {
    return id < id_bytes_.size() && id_valid_[id] ? &id_bytes_[id] : nullptr;
  }
  bool IsSpecial(uint32_t id) const { return id < id_special_.size() && id_special_[id]; }

  // One past the largest id (the size of an embedding that covers every id).
  uint32_t vocab_size() const { return static_cast<uint32_t>(id_bytes_.size()); }
  size_t num_merges() const { return model_.num_merges(); }
  const std::vector<AddedToken>& added_tokens() const { return added_.tokens(); }
  // Id of an added token's content, else of a vocabulary string (byte-level characters).
  std::optional<uint32_t> TokenToId(std::string_view content) const;
  // Id of a special token by content or role name (see Segment).
  std::optional<uint32_t> SpecialId(std::string_view name_or_content) const;

  const SpecialRoles& roles() const { return roles_; }
  void set_roles(SpecialRoles roles) { roles_ = std::move(roles); }
  const PreTokenizerOptions& pre_tokenizer_options() const { return pre_; }

 private:
  void EncodeValid(std::string_view text, bool parse_special, bool offsets, uint32_t offset_base,
                   Encoding* out) const;
  void EncodePlain(std::string_view piece, uint32_t base, bool offsets, Encoding* out) const;

  BpeModel model_;
  AddedVocabulary added_;
  PreTokenizerOptions pre_;
  SpecialRoles roles_;
  std::vector<std::string> id_bytes_;
  std::vector<bool> id_valid_;
  std::vector<bool> id_special_;
};

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_TOKENIZER_H_
