#include "services/worker/grammar/tokenizer_vocab.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/common/status_macros.h"

namespace phi::worker {
namespace {

using nlohmann::json;

// Ids above this are a corrupt file, not a vocabulary (and would make a huge table).
constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;

void AppendUtf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

bool IsByteLevelDecoder(const json& decoder) {
  if (!decoder.is_object()) return false;
  if (decoder.value("type", "") == "ByteLevel") return true;
  if (decoder.value("type", "") == "Sequence" && decoder.contains("decoders") &&
      decoder["decoders"].is_array()) {
    return std::any_of(decoder["decoders"].begin(), decoder["decoders"].end(), IsByteLevelDecoder);
  }
  return false;
}

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

}  // namespace

std::string ByteLevelEncode(std::string_view bytes) {
  // bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 take U+0100..
  // in byte order.
  static const std::array<char32_t, 256> kChar = [] {
    std::array<char32_t, 256> table{};
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      table[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return table;
  }();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8(kChar[b], out);
  return out;
}

absl::StatusOr<std::vector<std::string>> LoadByteLevelVocab(const std::string& path,
                                                            std::span<const int32_t> stop_ids) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Invalid(path, "cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  json doc = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return Invalid(path, "is not a JSON object");
  if (!IsByteLevelDecoder(doc.value("decoder", json()))) {
    return Invalid(path, "its decoder is not ByteLevel (structured output needs a GPT-2 byte-level vocabulary)");
  }
  const json* vocab = doc.contains("model") && doc["model"].is_object() && doc["model"].contains("vocab")
                          ? &doc["model"]["vocab"]
                          : nullptr;
  if (vocab == nullptr || !vocab->is_object()) return Invalid(path, "model.vocab is not an object");

  std::vector<std::string> tokens;
  auto slot = [&](const json& id_json, const std::string& where) -> absl::StatusOr<std::string*> {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 || id_json.get<int64_t>() > kMaxTokenId) {
      return Invalid(path, absl::StrCat(where, ": id must be an integer in [0, ", kMaxTokenId, "]"));
    }
    size_t id = id_json.get<size_t>();
    if (tokens.size() <= id) tokens.resize(id + 1);
    return &tokens[id];
  };
  for (const auto& [token, id] : vocab->items()) {
    PHI_ASSIGN_OR_RETURN(std::string* s, slot(id, "model.vocab"));
    *s = token;
  }
  const json added = doc.value("added_tokens", json::array());
  if (!added.is_array()) return Invalid(path, "added_tokens is not an array");
  for (const json& t : added) {
    if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) {
      return Invalid(path, "added_tokens: each entry needs a string content");
    }
    PHI_ASSIGN_OR_RETURN(std::string* s, slot(t.value("id", json()), "added_tokens"));
    int32_t id = static_cast<int32_t>(s - tokens.data());
    bool stop = std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end();
    if (t.value("special", false) && !stop) {
      *s = "";  // control tokens never appear inside constrained text
    } else {
      *s = ByteLevelEncode(t["content"].get<std::string>());
    }
  }
  if (tokens.empty()) return Invalid(path, "has no tokens");
  return tokens;
}

}  // namespace phi::worker
