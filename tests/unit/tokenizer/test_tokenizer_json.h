// A tiny tokenizer.json for unit tests: the 256 byte tokens, a few merges, added tokens.
#ifndef PHI_TESTS_UNIT_TOKENIZER_TEST_TOKENIZER_JSON_H_
#define PHI_TESTS_UNIT_TOKENIZER_TEST_TOKENIZER_JSON_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "services/tokenizer/byte_level.h"

namespace phi::tokenizer::testing {

// Byte b has id b; merges follow in order with ids 256, 257, ...
inline nlohmann::json TinyTokenizerJson(bool array_merges = false) {
  using Json = nlohmann::json;
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[BytesToByteLevelString(std::string(1, static_cast<char>(b)))] = b;
  // "h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"... (Ġ is the space byte).
  std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\xC4\xA0", "w"}, {"\xC4\xA0w", "o"},
      {"r", "l"}, {"\xC4\xA0wo", "rl"}, {"\xC4\xA0worl", "d"}, {"a", "a"}};
  Json jm = Json::array();
  int next = 256;
  for (auto& [a, b] : merges) {
    vocab[a + b] = next++;
    if (array_merges) jm.push_back(Json::array({a, b}));
    else jm.push_back(a + " " + b);
  }
  vocab["<|endoftext|>"] = next;  // 266
  auto added = [](int id, const std::string& c, bool special, bool normalized) {
    return Json{{"id", id}, {"content", c}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", normalized}, {"special", special}};
  };
  Json j = {
      {"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr},
      {"added_tokens", Json::array({added(266, "<|endoftext|>", true, false), added(267, "    ", false, true),
                                    added(268, "  ", false, true), added(269, "<|im_start|>", true, false),
                                    added(270, "<|im_end|>", true, false)})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                 {"vocab", vocab}, {"merges", jm}}}};
  return j;
}

}  // namespace phi::tokenizer::testing

#endif  // PHI_TESTS_UNIT_TOKENIZER_TEST_TOKENIZER_JSON_H_
