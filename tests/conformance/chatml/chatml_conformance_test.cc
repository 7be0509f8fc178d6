// ChatML conformance against Hugging Face: for every golden conversation (made by
// gen_conversations.py with apply_chat_template), the gateway's rendering must
// give the same text, with control tokens only where the template puts them.
// Ids: the segments encoded by the project's tokenizer library (what
// phi-tokenizer serves) must equal apply_chat_template(tokenize=True). The
// segments are also written out so that check_segment_ids.py can encode them
// with the HF tokenizer itself (the oracle for the segmentation alone).
#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "services/gateway/chatml.h"
#include "services/tokenizer/tokenizer.h"
#include "services/tokenizer/tokenizer_loader.h"

namespace phi::gateway {
namespace {

const char* EnvOr(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

TEST(ChatmlConformance, TextEqualsApplyChatTemplate) {
  std::ifstream in(EnvOr("PHI_CHATML_GOLDEN"));
  ASSERT_TRUE(in) << "set PHI_CHATML_GOLDEN to the output of gen_conversations.py";
  nlohmann::json golden = nlohmann::json::parse(in);
  ASSERT_GE(golden.size(), 100u);
  auto tokenizer = phi::tokenizer::LoadTokenizerFolder(EnvOr("PHI_CHATML_TOKENIZER"));
  ASSERT_TRUE(tokenizer.ok()) << "PHI_CHATML_TOKENIZER: " << tokenizer.status();
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < golden.size(); ++i) {
    const auto& conv = golden[i];
    google::protobuf::RepeatedPtrField<phi::v1::ChatMessage> msgs;
    for (const auto& m : conv["messages"]) {
      auto* msg = msgs.Add();
      msg->set_role(RoleFromName(m["role"].get<std::string>()));
      msg->set_content(m["content"].get<std::string>());
    }
    auto segs = RenderChatml(msgs, ChatmlOptions{});
    ASSERT_TRUE(segs.ok()) << "conversation " << i << ": " << segs.status();
    EXPECT_EQ(SegmentsToText(*segs), conv["text"].get<std::string>()) << "conversation " << i;
    // Every special segment is a control token; exactly two per turn plus the prompt's one.
    int specials = 0;
    nlohmann::json jsegs = nlohmann::json::array();
    for (const auto& s : segs->segments()) {
      if (s.has_special_token()) {
        ++specials;
        EXPECT_TRUE(s.special_token() == kImStart || s.special_token() == kImEnd) << s.special_token();
        jsegs.push_back({{"special", s.special_token()}});
      } else {
        jsegs.push_back({{"text", s.text()}});
      }
    }
    EXPECT_EQ(specials, 2 * msgs.size() + 1) << "conversation " << i;
    std::vector<phi::tokenizer::Segment> tsegs;
    for (const auto& s : segs->segments()) {
      tsegs.push_back(s.has_special_token() ? phi::tokenizer::Segment::Special(s.special_token())
                                            : phi::tokenizer::Segment::Text(s.text()));
    }
    auto enc = (*tokenizer)->EncodeSegments(tsegs);
    ASSERT_TRUE(enc.ok()) << "conversation " << i << ": " << enc.status();
    std::vector<int64_t> got(enc->ids.begin(), enc->ids.end());
    EXPECT_EQ(got, conv["ids"].get<std::vector<int64_t>>()) << "conversation " << i << ": " << conv["text"];
    out.push_back({{"segments", jsegs}, {"ids", conv["ids"]}});
  }
  std::ofstream o(EnvOr("PHI_CHATML_SEGMENTS_OUT"));
  ASSERT_TRUE(o) << "set PHI_CHATML_SEGMENTS_OUT";
  o << out.dump();
}

}  // namespace
}  // namespace phi::gateway
