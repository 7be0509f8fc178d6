// POST /v1/chat/completions bodies (ParseChatCompletionRequest in openai_request.h).
#include "services/gateway/openai_request.h"

#include <simdjson.h>

#include <string_view>

#include "services/gateway/openai_chat_messages.h"
#include "services/gateway/openai_generation_fields.h"
#include "services/gateway/openai_json.h"
#include "services/gateway/openai_request_bounds.h"

namespace phi::gateway {
namespace {

// The chat endpoint's own parameters, on top of the shared ones (IsGenerationField).
// clang-format off
constexpr std::string_view kChatKeys[] = {
    "messages", "logprobs", "top_logprobs", "max_completion_tokens", "tools", "functions", "tool_choice",
    "function_call", "parallel_tool_calls", "service_tier", "store", "metadata", "modalities"};
// clang-format on

// Chat parameters we do not implement, accepted only at their neutral value.
absl::StatusOr<bool> HandleChatNeutral(std::string_view key, od::value& v) {
  absl::Status st;
  if (key == "tools") {
    st = EmptyArrayOnly(v, key, "not supported yet (only [] or null)");
  } else if (key == "functions") {
    st = EmptyArrayOnly(v, key, "not supported yet (only [] or null)");
  } else if (key == "tool_choice" || key == "function_call") {
    od::json_type t = od::json_type::null;
    if (!(st = TypeOf(v, &t)).ok()) return st;
    // With no tools, "none" and "auto" mean the same thing: a plain answer.
    if (t != od::json_type::string) {
      st = Invalid(Cat(key, ": only \"none\", \"auto\" or null (tools are not supported yet), got ", KindName(t)));
    } else {
      st = StringIn(v, key, {"none", "auto"}, "only \"none\", \"auto\" or null (tools are not supported yet)");
    }
  } else if (key == "parallel_tool_calls") {
    bool b = false;
    st = ReadBool(v, key, &b);
  } else if (key == "service_tier") {
    st = StringIn(v, key, {"auto", "default"}, "only \"auto\" or \"default\" is supported");
  } else if (key == "store") {
    bool b = false;
    if ((st = ReadBool(v, key, &b)).ok() && b) st = Invalid("store: true is not supported (stored completions)");
  } else if (key == "metadata") {
    st = EmptyObjectOnly(v, key, "not supported (only {} or null)");
  } else if (key == "modalities") {
    od::array a;
    if (!(st = GetArray(v, key, "an array [\"text\"]", &a)).ok()) return st;
    size_t count = 0;
    st = ForEachElement(a, [&](size_t i, od::value& e) {
      ++count;
      if (i > 0) return Invalid("modalities: only [\"text\"] is supported");
      return StringIn(e, "modalities[0]", {"text"}, "only \"text\" is supported");
    });
    if (st.ok() && count == 0) st = Invalid("modalities: only [\"text\"] is supported, got []");
  } else {
    return false;
  }
  if (!st.ok()) return st;
  return true;
}

}  // namespace

absl::StatusOr<ChatCompletionRequest> ParseChatCompletionRequest(std::string_view body, const ChatmlOptions& chatml,
                                                                 const OpenAiRequestLimits& limits) {
  GenerationFields common(/*chat=*/true, limits);
  GenerateParams& p = common.params();
  google::protobuf::RepeatedPtrField<phi::v1::ChatMessage> messages;
  bool has_messages = false, logprobs = false;
  int64_t top_logprobs = 0;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    if (!IsGenerationField(key) && !IsOneOf(key, kChatKeys)) return Unknown("", key);
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok() || is_null) return s;  // null = absent
    if (key == "messages") {
      has_messages = true;
      return ReadMessages(v, limits, &messages);
    }
    if (key == "logprobs") return ReadBool(v, key, &logprobs);
    if (key == "top_logprobs") return ReadInt(v, key, 0, kMaxLogprobs, &top_logprobs);
    absl::StatusOr<bool> handled = common.Handle(key, v);
    if (handled.ok() && !*handled) handled = HandleChatNeutral(key, v);
    if (!handled.ok()) return handled.status();
    return *handled ? absl::OkStatus() : Unknown("", key);
  });
  if (!st.ok()) return st;
  if (!has_messages) return Invalid("messages: required, a non-empty array of {role, content}");
  if (absl::Status s = common.Finish(/*default_max_tokens=*/0); !s.ok()) return s;  // 0: the model's default
  absl::StatusOr<phi::v1::SegmentList> segs = RenderChatml(messages, chatml);
  if (!segs.ok()) return segs.status();
  *p.prompt.mutable_segments() = std::move(*segs);
  p.logprobs = logprobs || top_logprobs > 0;
  p.top_logprobs = static_cast<int32_t>(top_logprobs);
  ChatCompletionRequest out;
  out.stream = common.stream();
  out.include_usage = common.include_usage();
  out.constraint_param = common.constraint_param();
  out.params = std::move(p);
  return out;
}

}  // namespace phi::gateway
