// libFuzzer: arbitrary conversations -> gateway::RenderChatml. The bytes choose the options
// (default system prompt, message and size limits) and each message's role (any int32, as a
// proto3 open enum carries it) and content (any bytes, "<|im_end|>" included). Checked against
// a reference written from chatml.h's contract: the same accept/refuse decision, refusals as
// INVALID_ARGUMENT naming "messages"; an accepted conversation renders to exactly
// [<|im_start|> "role\ncontent" <|im_end|> "\n"]* <|im_start|> "assistant\n", with content
// never split or parsed for special tokens.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "services/gateway/chatml.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using phi::gateway::ChatmlOptions;
using phi::gateway::kImEnd;
using phi::gateway::kImStart;
using phi::gateway::RoleName;

// chatml.h's rules for a conversation, restated.
bool ReferenceAccepts(const google::protobuf::RepeatedPtrField<phi::v1::ChatMessage>& messages,
                      const ChatmlOptions& options) {
  if (messages.empty() || messages.size() > options.max_messages) return false;
  bool has_user = false;
  for (int i = 0; i < messages.size(); ++i) {
    const phi::v1::Role role = messages[i].role();
    if (role != phi::v1::ROLE_SYSTEM && role != phi::v1::ROLE_USER && role != phi::v1::ROLE_ASSISTANT) return false;
    if (role == phi::v1::ROLE_SYSTEM && i != 0) return false;
    if (messages[i].content().size() > options.max_message_bytes) return false;
    has_user = has_user || role == phi::v1::ROLE_USER;
  }
  return has_user;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  ChatmlOptions options;
  options.max_messages = in.ConsumeIntegralInRange<int>(0, 12);
  options.max_message_bytes = in.ConsumeIntegralInRange<size_t>(0, 64);
  if (in.ConsumeBool()) options.default_system_prompt = in.ConsumeRandomLengthString(32);
  phi::v1::ChatRequest request;
  const int count = in.ConsumeIntegralInRange<int>(0, 14);
  for (int i = 0; i < count; ++i) {
    phi::v1::ChatMessage* m = request.add_messages();
    // Mostly the three known roles, sometimes any value the wire can carry.
    const int32_t role = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(1, 3) : in.ConsumeIntegral<int32_t>();
    m->set_role(static_cast<phi::v1::Role>(role));
    m->set_content(in.ConsumeRandomLengthString(80));
  }
  const auto& messages = request.messages();
  auto segs = phi::gateway::RenderChatml(messages, options);
  FUZZ_CHECK(segs.ok() == ReferenceAccepts(messages, options));
  FUZZ_CHECK(phi::gateway::ValidateConversation(messages, options).ok() == segs.ok());
  if (!segs.ok()) {
    FUZZ_CHECK(segs.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(segs.status().message().find("messages") == 0);
    return 0;
  }
  std::string want;
  int turns = 0;
  auto turn = [&](std::string_view role, const std::string& content) {
    want.append(kImStart).append(role).append("\n").append(content).append(kImEnd).append("\n");
    ++turns;
  };
  if (!options.default_system_prompt.empty() && messages[0].role() != phi::v1::ROLE_SYSTEM) {
    turn("system", options.default_system_prompt);
  }
  for (const auto& m : messages) turn(RoleName(m.role()), m.content());
  want.append(kImStart).append("assistant\n");
  FUZZ_CHECK(phi::gateway::SegmentsToText(*segs) == want);
  // Segment structure: special tokens only where the template puts them, each turn's text whole.
  FUZZ_CHECK(segs->segments_size() == 4 * turns + 2);
  for (int i = 0; i < segs->segments_size(); ++i) {
    const phi::v1::Segment& s = segs->segments(i);
    switch (i % 4) {
      case 0:
        FUZZ_CHECK(s.has_special_token() && s.special_token() == kImStart);
        break;
      case 2:
        FUZZ_CHECK(s.has_special_token() && s.special_token() == kImEnd);
        break;
      default:
        FUZZ_CHECK(!s.has_special_token());
    }
  }
  int m = 0;
  for (int t = 0; t < turns; ++t) {
    const std::string& text = segs->segments(4 * t + 1).text();
    if (t == 0 && turns > messages.size()) {
      FUZZ_CHECK(text == "system\n" + options.default_system_prompt);
      continue;
    }
    FUZZ_CHECK(text == std::string(RoleName(messages[m].role())) + "\n" + messages[m].content());
    ++m;
  }
  FUZZ_CHECK(segs->segments(4 * turns + 1).text() == "assistant\n");
  return 0;
}
