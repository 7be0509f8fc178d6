#include "services/tokenizer/tokenizer.h"

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/tokenizer/byte_level.h"
#include "services/tokenizer/pre_tokenizer.h"
#include "services/tokenizer/utf8.h"

namespace phi::tokenizer {

Tokenizer::Tokenizer(BpeModel model, std::vector<AddedToken> added, PreTokenizerOptions pre)
    : model_(std::move(model)), added_(std::move(added)), pre_(pre) {
  uint32_t limit = model_.id_limit();
  for (const AddedToken& t : added_.tokens()) limit = std::max(limit, t.id + 1);
  id_bytes_.resize(limit);
  id_valid_.assign(limit, false);
  id_special_.assign(limit, false);
  for (uint32_t id = 0; id < model_.id_limit(); ++id) {
    if (const std::string* s = model_.IdToString(id)) {
      id_bytes_[id] = ByteLevelTokenBytes(*s);
      id_valid_[id] = true;
    }
  }
  // Added tokens take precedence for decoding, as in Hugging Face's id_to_token.
  for (const AddedToken& t : added_.tokens()) {
    id_bytes_[t.id] = ByteLevelTokenBytes(t.content);
    id_valid_[t.id] = true;
  }
  // Specialness is a property of the content (Hugging Face's special_tokens_set).
  for (const AddedToken& t : added_.tokens()) {
    if (!t.special) continue;
    id_special_[t.id] = true;
    if (auto v = model_.StringToId(t.content)) id_special_[*v] = true;
  }
}

std::optional<uint32_t> Tokenizer::TokenToId(std::string_view content) const {
  for (const AddedToken& t : added_.tokens()) {
    if (t.content == content) return t.id;
  }
  return model_.StringToId(content);
}

std::optional<uint32_t> Tokenizer::SpecialId(std::string_view name) const {
  if (name == "bos") return roles_.bos;
  if (name == "eos") return roles_.eos;
  if (name == "pad") return roles_.pad;
  if (name == "unk") return roles_.unk;
  if (name == "im_start") return roles_.im_start;
  if (name == "im_end") return roles_.im_end;
  for (const AddedToken& t : added_.tokens()) {
    if (t.content == name) return t.id;
  }
  return std::nullopt;
}

absl::StatusOr<Encoding> Tokenizer::Encode(std::string_view text,
                                           const EncodeOptions& options) const {
  Encoding out;
  PHI_RETURN_IF_ERROR(EncodeAppend(text, options, &out));
  return out;
}

absl::Status Tokenizer::EncodeAppend(std::string_view text, const EncodeOptions& options,
                                     Encoding* out, uint32_t offset_base) const {
  if (size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 at byte offset ", bad));
  }
  EncodeValid(text, options.parse_special, options.offsets, offset_base, out);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Encoding>> Tokenizer::EncodeBatch(
    absl::Span<const std::string_view> texts, const EncodeOptions& options) const {
  std::vector<Encoding> out(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    if (absl::Status s = EncodeAppend(texts[i], options, &out[i]); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("texts[", i, "]: ", s.message()));
    }
  }
  return out;
}

absl::StatusOr<Encoding> Tokenizer::EncodeSegments(absl::Span<const Segment> segments,
                                                   bool offsets) const {
  Encoding out;
  uint32_t base = 0;
  EncodeOptions text_options{.parse_special = false, .offsets = offsets};
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& seg = segments[i];
    if (seg.kind == Segment::Kind::kText) {
      if (absl::Status s = EncodeAppend(seg.value, text_options, &out, base); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("segments[", i, "]: ", s.message()));
      }
      base += static_cast<uint32_t>(seg.value.size());
      continue;
    }
    std::optional<uint32_t> id = SpecialId(seg.value);
    if (!id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "segments[", i, "]: unknown special token '", seg.value,
          "' (use an added token's content or one of bos, eos, pad, unk, im_start, im_end)"));
    }
    out.ids.push_back(*id);
    uint32_t len = static_cast<uint32_t>(id_bytes_[*id].size());
    if (offsets) out.offsets.emplace_back(base, base + len);
    base += len;
  }
  return out;
}

void Tokenizer::EncodeValid(std::string_view text, bool parse_special, bool offsets,
                            uint32_t offset_base, Encoding* out) const {
  thread_local std::vector<TextSplit> splits;
  splits.clear();
  added_.Split(text, parse_special, &splits);
  for (const TextSplit& s : splits) {
    if (s.token != TextSplit::kNoToken) {
      out->ids.push_back(s.token);
      if (offsets) {
        out->offsets.emplace_back(offset_base + s.begin, offset_base + s.end);
      }
      continue;
    }
    EncodePlain(text.substr(s.begin, s.end - s.begin), offset_base + static_cast<uint32_t>(s.begin),
                offsets, out);
  }
}

void Tokenizer::EncodePlain(std::string_view piece, uint32_t base, bool offsets,
                            Encoding* out) const {
  if (piece.empty()) return;
  std::string_view work = piece;
  int64_t shift = 0;  // offset of work[0] relative to piece[0]
  thread_local std::string prefixed;
  if (pre_.add_prefix_space && piece[0] != ' ') {
    prefixed.assign(1, ' ');
    prefixed.append(piece);
    work = prefixed;
    shift = -1;
  }
  auto emit_word = [&](size_t b, size_t e) {
    size_t first = out->ids.size();
    model_.EncodeWord(work.substr(b, e - b), &out->ids);
    if (!offsets) return;
    int64_t pos = static_cast<int64_t>(b) + shift;
    for (size_t k = first; k < out->ids.size(); ++k) {
      int64_t end = pos + static_cast<int64_t>(id_bytes_[out->ids[k]].size());
      int64_t lo = std::max<int64_t>(pos, 0);
      int64_t hi = std::max<int64_t>(end, 0);
      out->offsets.emplace_back(base + static_cast<uint32_t>(lo), base + static_cast<uint32_t>(hi));
      pos = end;
    }
  };
  if (pre_.use_regex) {
    SplitGpt2(work, emit_word);
  } else {
    emit_word(0, work.size());
  }
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const uint32_t> ids,
                                              bool skip_special_tokens) const {
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string* b = TokenBytes(ids[i]);
    if (b == nullptr) continue;  // no token: a padded output row of the model; HF skips it too
    if (skip_special_tokens && id_special_[ids[i]]) continue;
    bytes.append(*b);
  }
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, &text);
  return text;
}

}  // namespace phi::tokenizer
