// Compares phi::tokenizer with Hugging Face `tokenizers` on golden data that make_golden.py
// records (ids with special tokens parsed and as plain text, decode with and without
// skip_special_tokens, decode and streaming decode of random ids). The golden folder comes from
// the ctest fixture through PHI_TOKENIZER_GOLDEN_DIR.
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "services/tokenizer/stream_decoder.h"
#include "services/tokenizer/tokenizer.h"
#include "services/tokenizer/tokenizer_loader.h"

namespace phi::tokenizer {
namespace {

using Json = nlohmann::json;

std::string GoldenDir() {
  const char* dir = std::getenv("PHI_TOKENIZER_GOLDEN_DIR");
  return dir ? dir : "";
}

std::string Escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return out.size() > 300 ? out.substr(0, 300) + "..." : out;
}

class ConformanceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ConformanceTest, MatchesHuggingFace) {
  const std::string dir = GoldenDir() + "/" + GetParam();
  if (GoldenDir().empty()) GTEST_FAIL() << "PHI_TOKENIZER_GOLDEN_DIR is not set (run through ctest)";
  auto tok = LoadTokenizerFolder(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ifstream in(dir + "/cases.jsonl");
  ASSERT_TRUE(in) << "missing " << dir << "/cases.jsonl";
  std::string line;
  size_t cases = 0, failures = 0;
  while (std::getline(in, line)) {
    Json c = Json::parse(line);
    const std::string text = c["text"];
    auto ids = c["ids"].get<std::vector<uint32_t>>();
    auto ids_plain = c["ids_plain"].get<std::vector<uint32_t>>();
    ++cases;
    auto fail = [&](const std::string& what) {
      if (++failures <= 10) ADD_FAILURE() << GetParam() << " case " << cases << " " << what << "\n  text: "
                                          << Escape(text);
    };
    auto enc = (*tok)->Encode(text, {.parse_special = true});
    if (!enc.ok() || enc->ids != ids) {
      fail("ids (special tokens parsed) differ" + (enc.ok() ? "" : ": " + enc.status().ToString()) +
           (enc.ok() ? "\n  got: " + ::testing::PrintToString(enc->ids) : "") +
           "\n  want: " + ::testing::PrintToString(ids));
      continue;
    }
    auto plain = (*tok)->Encode(text, {.parse_special = false});
    if (!plain.ok() || plain->ids != ids_plain) {
      fail("ids (special tokens as text) differ\n  got: " +
           (plain.ok() ? ::testing::PrintToString(plain->ids) : plain.status().ToString()) +
           "\n  want: " + ::testing::PrintToString(ids_plain));
      continue;
    }
    auto dec = (*tok)->Decode(ids, false);
    if (!dec.ok() || *dec != c["decoded"].get<std::string>()) {
      fail("decode differs: " + (dec.ok() ? Escape(*dec) : dec.status().ToString()));
      continue;
    }
    auto dec_skip = (*tok)->Decode(ids, true);
    if (!dec_skip.ok() || *dec_skip != c["decoded_skip"].get<std::string>()) {
      fail("decode(skip_special_tokens) differs: " + (dec_skip.ok() ? Escape(*dec_skip) : ""));
      continue;
    }
    auto rid = c["random_ids"].get<std::vector<uint32_t>>();
    const std::string want = c["random_decoded"];
    auto rdec = (*tok)->Decode(rid, false);
    if (!rdec.ok() || *rdec != want) {
      fail("decode of random ids differs: " + (rdec.ok() ? Escape(*rdec) : "") + " want " + Escape(want));
      continue;
    }
    // Streaming, one id at a time: deltas are whole characters and add up to Decode.
    StreamDecoder stream(**tok, false);
    std::string streamed;
    for (uint32_t id : rid) {
      std::string delta;
      ASSERT_TRUE(stream.Push({&id, 1}, &delta).ok());
      streamed += delta;
    }
    stream.Finish(&streamed);
    if (streamed != want) fail("streaming decode differs: " + Escape(streamed) + " want " + Escape(want));
  }
  EXPECT_EQ(failures, 0u) << "of " << cases << " cases";
  EXPECT_GE(cases, 1000u);
  std::printf("%s: %zu cases, %zu failures\n", GetParam().c_str(), cases, failures);
}

INSTANTIATE_TEST_SUITE_P(Variants, ConformanceTest,
                         ::testing::Values("bpe1k", "bpe32k", "bpe32k_array_merges",
                                           "bpe1k_prefix_space", "bpe1k_no_regex", "bpe1k_folder",
                                           "bpe1k_token_flags", "bpe32k_ignore_merges", "phi15",
                                           "phi15_folder"));

}  // namespace
}  // namespace phi::tokenizer
