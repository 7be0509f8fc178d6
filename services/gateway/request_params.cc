#include "services/gateway/request_params.h"

#include <limits>
#include <optional>
#include <string>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include "absl/strings/str_cat.h"

namespace phi::gateway {
namespace {

// Offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), as protobuf's own check has it.
std::optional<size_t> FirstInvalidUtf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return std::nullopt;
}

struct BadUtf8 {
  std::string field;
  size_t offset = 0;
};

// Walks the wire encoding of a `type` message for the first string field (at any depth) that
// is not valid UTF-8. Field paths as the validation messages name them: "messages[1].content",
// "stopping.stop[0]". Malformed input ends the walk quietly (the parse then reports it).
void FindInvalidUtf8(const google::protobuf::Descriptor* type, const uint8_t* data, int size,
                     const std::string& prefix, int depth, std::optional<BadUtf8>* found) {
  using google::protobuf::FieldDescriptor;
  using google::protobuf::internal::WireFormatLite;
  google::protobuf::io::CodedInputStream in(data, size);
  std::map<int, int> occurrences;  // of each repeated field so far
  while (!found->has_value()) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return;
    const FieldDescriptor* f = type->FindFieldByNumber(static_cast<int>(WireFormatLite::GetTagFieldNumber(tag)));
    const bool text_or_message =
        f != nullptr && (f->type() == FieldDescriptor::TYPE_STRING || f->type() == FieldDescriptor::TYPE_MESSAGE);
    if (WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED || !text_or_message) {
      if (!WireFormatLite::SkipField(&in, tag)) return;
      continue;
    }
    uint32_t len = 0;
    if (!in.ReadVarint32(&len)) return;
    const int pos = in.CurrentPosition();
    if (len > static_cast<uint32_t>(size - pos)) return;
    std::string name = prefix + f->name();
    if (f->is_repeated()) absl::StrAppend(&name, "[", occurrences[f->number()]++, "]");
    if (f->type() == FieldDescriptor::TYPE_STRING) {
      if (std::optional<size_t> bad = FirstInvalidUtf8(data + pos, len)) *found = BadUtf8{std::move(name), *bad};
    } else if (depth < 32) {
      FindInvalidUtf8(f->message_type(), data + pos, static_cast<int>(len), name + ".", depth + 1, found);
    }
    if (!in.Skip(static_cast<int>(len))) return;
  }
}

}  // namespace

absl::Status ParseRequestBytes(const uint8_t* data, size_t size, google::protobuf::Message* msg) {
  const std::string type = msg->GetDescriptor()->full_name();
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("request: ", size, " bytes, too large for a ", type));
  }
  // Checked before parsing: protobuf would refuse the message and log an error per request.
  std::optional<BadUtf8> bad;
  FindInvalidUtf8(msg->GetDescriptor(), data, static_cast<int>(size), "", 0, &bad);
  if (bad) return absl::InvalidArgumentError(absl::StrCat(bad->field, ": not valid UTF-8 at byte ", bad->offset));
  if (!msg->ParseFromArray(data, static_cast<int>(size))) {
    return absl::InvalidArgumentError(absl::StrCat("request: not a valid ", type, " (malformed protobuf encoding)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateParams> ParamsFromChat(const phi::v1::ChatRequest& req, const ChatmlOptions& chatml) {
  GenerateParams p;
  absl::StatusOr<phi::v1::SegmentList> segs = RenderChatml(req.messages(), chatml);
  if (!segs.ok()) return segs.status();
  *p.prompt.mutable_segments() = std::move(*segs);
  p.request_id = req.request_id();
  p.model = req.model();
  p.sampling = req.sampling();
  p.stopping = req.stopping();
  p.logprobs = req.logprobs() || req.top_logprobs() > 0;
  p.top_logprobs = req.top_logprobs();
  p.n = req.n();
  p.best_of = req.best_of();
  return p;
}

absl::StatusOr<GenerateParams> ParamsFromComplete(const phi::v1::CompleteRequest& req) {
  if (req.prompt().empty()) return absl::InvalidArgumentError("prompt: at least 1 byte is required");
  if (req.prompt().size() > (4u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", req.prompt().size(), " bytes, at most 4 MiB"));
  }
  GenerateParams p;
  p.prompt.set_text(req.prompt());
  p.parse_special = true;
  if (req.echo()) p.echo_text = req.prompt();
  p.request_id = req.request_id();
  p.model = req.model();
  p.sampling = req.sampling();
  p.stopping = req.stopping();
  p.logprobs = req.logprobs() || req.top_logprobs() > 0;
  p.top_logprobs = req.top_logprobs();
  p.prompt_logprobs = req.prompt_logprobs();
  p.n = req.n();
  p.best_of = req.best_of();
  return p;
}

}  // namespace phi::gateway
