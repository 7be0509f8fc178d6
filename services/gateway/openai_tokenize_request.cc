// vLLM's POST /tokenize and /detokenize bodies (ParseTokenizeRequest, ParseDetokenizeRequest in
// openai_request.h).
#include "services/gateway/openai_request.h"

#include <simdjson.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "services/gateway/openai_chat_messages.h"
#include "services/gateway/openai_json.h"
#include "services/gateway/openai_request_bounds.h"

namespace phi::gateway {

absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(std::string_view body, const ChatmlOptions& chatml,
                                                     const OpenAiRequestLimits& limits) {
  TokenizeRequest out;
  std::optional<std::string> prompt;
  google::protobuf::RepeatedPtrField<phi::v1::ChatMessage> messages;
  bool has_messages = false, add_generation_prompt = true, add_special_given = false, add_gen_given = false;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok()) return s;
    if (key != "model" && key != "prompt" && key != "messages" && key != "add_special_tokens" &&
        key != "add_generation_prompt" && key != "return_token_strs") {
      return Unknown("", key);
    }
    if (is_null) return absl::OkStatus();
    if (key == "model") return ReadBoundedString(v, key, kMaxNameBytes, &out.model);
    if (key == "prompt") {
      std::string_view s;
      if (absl::Status r = ReadString(v, key, &s); !r.ok()) return r;
      prompt = std::string(s);
      return absl::OkStatus();
    }
    if (key == "messages") {
      has_messages = true;
      return ReadMessages(v, limits, &messages);
    }
    if (key == "add_special_tokens") {
      add_special_given = true;
      return ReadBool(v, key, &out.parse_special);
    }
    if (key == "add_generation_prompt") {
      add_gen_given = true;
      return ReadBool(v, key, &add_generation_prompt);
    }
    return ReadBool(v, key, &out.return_token_strs);
  });
  if (!st.ok()) return st;
  if (prompt.has_value() == has_messages) return Invalid("prompt: exactly one of prompt or messages is required");
  if (prompt) {
    if (add_gen_given) return Invalid("add_generation_prompt: only with messages");
    out.prompt.set_text(std::move(*prompt));
    return out;
  }
  if (add_special_given) return Invalid("add_special_tokens: only with prompt");
  absl::StatusOr<phi::v1::SegmentList> segs = RenderChatml(messages, chatml);
  if (!segs.ok()) return segs.status();
  // RenderChatml ends with the generation prompt: <|im_start|> "assistant\n".
  if (!add_generation_prompt && segs->segments_size() >= 2) {
    segs->mutable_segments()->DeleteSubrange(segs->segments_size() - 2, 2);
  }
  *out.prompt.mutable_segments() = std::move(*segs);
  out.parse_special = false;
  return out;
}

absl::StatusOr<DetokenizeRequest> ParseDetokenizeRequest(std::string_view body, const OpenAiRequestLimits& limits) {
  DetokenizeRequest out;
  bool has_tokens = false;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok()) return s;
    if (key != "model" && key != "tokens") return Unknown("", key);
    if (is_null) return absl::OkStatus();
    if (key == "model") return ReadBoundedString(v, key, kMaxNameBytes, &out.model);
    has_tokens = true;
    od::array a;
    if (absl::Status s = GetArray(v, "tokens", "an array of token ids", &a); !s.ok()) return s;
    return ReadTokenIds(a, "tokens", limits.max_prompt_token_ids, &out.tokens);
  });
  if (!st.ok()) return st;
  if (!has_tokens) return Invalid("tokens: required, an array of token ids");
  return out;
}

}  // namespace phi::gateway
