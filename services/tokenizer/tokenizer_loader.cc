#include "services/tokenizer/tokenizer_loader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "nlohmann/json.hpp"
#include "services/common/status_macros.h"
#include "services/tokenizer/byte_level.h"

namespace phi::tokenizer {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// Ids index dense per-id tables; real vocabularies stay below ~300k, so 2^21 refuses absurd
// files before they cost gigabytes.
constexpr uint32_t kIdLimit = 1u << 21;

absl::Status Error(const std::string& source, const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", where, ": ", what));
}
absl::Status Unsupported(const std::string& source, const std::string& where, const std::string& what) {
  return absl::UnimplementedError(absl::StrCat(source, ": ", where, ": unsupported ", what));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ss.str();
}

absl::StatusOr<Json> ParseJson(std::string_view text, const std::string& source) {
  // nlohmann reports errors by exception; it stays inside this function.
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": JSON parse error at byte ", e.byte, ": ", e.what()));
  }
}

std::string TypeName(const Json& j) { return j.type_name(); }

absl::StatusOr<bool> GetBool(const Json& obj, const char* key, bool dflt, const std::string& source,
                             const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) {
    return Error(source, absl::StrCat(where, "/", key),
                 absl::StrCat("expected a boolean, got ", TypeName(*it)));
  }
  return it->get<bool>();
}

absl::StatusOr<PreTokenizerOptions> ParseByteLevel(const Json& pt, const std::string& source,
                                                   const std::string& where) {
  PreTokenizerOptions o;
  PHI_ASSIGN_OR_RETURN(o.add_prefix_space, GetBool(pt, "add_prefix_space", false, source, where));
  PHI_ASSIGN_OR_RETURN(o.use_regex, GetBool(pt, "use_regex", true, source, where));
  // trim_offsets only changes offsets in Hugging Face's post-processor; accepted and ignored.
  PHI_RETURN_IF_ERROR(GetBool(pt, "trim_offsets", true, source, where).status());
  return o;
}

absl::StatusOr<PreTokenizerOptions> ParsePreTokenizer(const Json& root, const std::string& source) {
  auto it = root.find("pre_tokenizer");
  if (it == root.end() || it->is_null()) {
    return Unsupported(source, "/pre_tokenizer", "null pre-tokenizer (ByteLevel is required)");
  }
  const Json& pt = *it;
  std::string type = pt.value("type", "");
  if (type == "ByteLevel") return ParseByteLevel(pt, source, "/pre_tokenizer");
  if (type == "Sequence" && pt.contains("pretokenizers") && pt["pretokenizers"].is_array() &&
      pt["pretokenizers"].size() == 1 && pt["pretokenizers"][0].value("type", "") == "ByteLevel") {
    return ParseByteLevel(pt["pretokenizers"][0], source, "/pre_tokenizer/pretokenizers/0");
  }
  return Unsupported(source, "/pre_tokenizer/type",
                     absl::StrCat("pre-tokenizer '", type, "' (only ByteLevel is supported)"));
}

absl::Status CheckPipeline(const Json& root, const std::string& source) {
  if (auto it = root.find("normalizer"); it != root.end() && !it->is_null()) {
    bool empty_sequence = it->value("type", "") == "Sequence" && it->contains("normalizers") &&
                          (*it)["normalizers"].is_array() && (*it)["normalizers"].empty();
    if (!empty_sequence) {
      return Unsupported(source, "/normalizer/type",
                         absl::StrCat("normalizer '", it->value("type", "?"), "' (none is supported)"));
    }
  }
  auto dec = root.find("decoder");
  if (dec == root.end() || dec->is_null()) {
    return Unsupported(source, "/decoder", "null decoder (ByteLevel is required)");
  }
  if (dec->value("type", "") != "ByteLevel") {
    return Unsupported(source, "/decoder/type",
                       absl::StrCat("decoder '", dec->value("type", "?"), "' (only ByteLevel)"));
  }
  if (auto pp = root.find("post_processor"); pp != root.end() && !pp->is_null()) {
    // ByteLevel only adjusts offsets; processors that add tokens would change the ids.
    if (pp->value("type", "") != "ByteLevel") {
      return Unsupported(source, "/post_processor/type",
                         absl::StrCat("post-processor '", pp->value("type", "?"),
                                      "' (only ByteLevel or null)"));
    }
  }
  for (const char* key : {"truncation", "padding"}) {
    if (auto it = root.find(key); it != root.end() && !it->is_null()) {
      return Unsupported(source, absl::StrCat("/", key), absl::StrCat(key, " (must be null)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, uint32_t>>> ParseVocab(
    const Json& vocab, const std::string& source, const std::string& where) {
  if (!vocab.is_object()) {
    return Error(source, where, absl::StrCat("expected an object, got ", TypeName(vocab)));
  }
  std::vector<std::pair<std::string, uint32_t>> out;
  out.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_unsigned()) {
      return Error(source, absl::StrCat(where, "/", it.key()),
                   absl::StrCat("expected a non-negative id, got ", TypeName(it.value())));
    }
    uint64_t id = it.value().get<uint64_t>();
    if (id >= kIdLimit) {
      return Error(source, absl::StrCat(where, "/", it.key()), absl::StrCat("id ", id, " too large"));
    }
    out.emplace_back(it.key(), static_cast<uint32_t>(id));
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseMerges(
    const Json& merges, const std::string& source, const std::string& where) {
  if (!merges.is_array()) {
    return Error(source, where, absl::StrCat("expected an array, got ", TypeName(merges)));
  }
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    std::string at = absl::StrCat(where, "/", i);
    if (m.is_string()) {
      // "a b": byte-level vocabulary strings never contain U+0020.
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return Error(source, at, absl::StrCat("merge '", s, "' is not two tokens separated by a space"));
      }
      out.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Error(source, at, "merge must be \"a b\" or [\"a\", \"b\"]");
    }
  }
  return out;
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root, const std::string& source) {
  std::vector<AddedToken> out;
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return out;
  if (!it->is_array()) return Error(source, "/added_tokens", "expected an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& t = (*it)[i];
    std::string where = absl::StrCat("/added_tokens/", i);
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_unsigned() ||
        !t.contains("content") || !t["content"].is_string()) {
      return Error(source, where, "expected {\"id\": <uint>, \"content\": <string>, ...}");
    }
    AddedToken a;
    if (t["id"].get<uint64_t>() >= kIdLimit) return Error(source, where + "/id", "id too large");
    a.id = t["id"].get<uint32_t>();
    a.content = t["content"].get<std::string>();
    if (a.content.empty()) return Error(source, where + "/content", "empty added token");
    struct Flag {
      const char* key;
      bool* field;
      bool dflt;
    } flags[] = {{"special", &a.special, false},  {"normalized", &a.normalized, true},
                 {"lstrip", &a.lstrip, false},    {"rstrip", &a.rstrip, false},
                 {"single_word", &a.single_word, false}};
    for (const Flag& f : flags) {
      PHI_ASSIGN_OR_RETURN(*f.field, GetBool(t, f.key, f.dflt, source, where));
    }
    out.push_back(std::move(a));
  }
  return out;
}

bool AllBytesPresent(const std::vector<std::pair<std::string, uint32_t>>& vocab) {
  // Every byte character is one code point below U+0200: count single-character entries that
  // are byte characters.
  std::vector<bool> seen(256, false);
  for (const auto& [s, id] : vocab) {
    (void)id;
    if (s.size() > 2) continue;
    // Decode one or two UTF-8 bytes.
    unsigned char c0 = static_cast<unsigned char>(s[0]);
    char32_t cp;
    if (s.size() == 1 && c0 < 0x80) {
      cp = c0;
    } else if (s.size() == 2 && c0 >= 0xC2 && c0 < 0xE0) {
      cp = (char32_t(c0 & 0x1F) << 6) | (static_cast<unsigned char>(s[1]) & 0x3F);
    } else {
      continue;
    }
    int b = CharToByte(cp);
    if (b >= 0) seen[b] = true;
  }
  for (bool b : seen) {
    if (!b) return false;
  }
  return true;
}

absl::StatusOr<BpeModel::Options> ParseModelOptions(const Json& model, const std::string& source,
                                                   bool all_bytes_present) {
  std::string type = model.value("type", "BPE");
  if (type != "BPE") {
    return Unsupported(source, "/model/type",
                       absl::StrCat("model type '", type, "' (only BPE is supported)"));
  }
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!(it->is_number() && it->get<double>() == 0.0)) {
      return Unsupported(source, "/model/dropout", "BPE dropout (must be null)");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = model.find(key); it != model.end() && !it->is_null()) {
      if (!it->is_string() || !it->get<std::string>().empty()) {
        return Unsupported(source, absl::StrCat("/model/", key), absl::StrCat(key, " (must be null)"));
      }
    }
  }
  PHI_ASSIGN_OR_RETURN(bool byte_fallback, GetBool(model, "byte_fallback", false, source, "/model"));
  if (byte_fallback) return Unsupported(source, "/model/byte_fallback", "byte_fallback (must be false)");
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null() && !all_bytes_present) {
    return Unsupported(source, "/model/unk_token",
                       "unk_token with a vocabulary that lacks some of the 256 byte tokens");
  }
  BpeModel::Options o;
  PHI_ASSIGN_OR_RETURN(o.ignore_merges, GetBool(model, "ignore_merges", false, source, "/model"));
  return o;
}

bool SameToken(const AddedToken& a, const AddedToken& b) {
  return a.content == b.content && a.special == b.special && a.normalized == b.normalized &&
         a.lstrip == b.lstrip && a.rstrip == b.rstrip && a.single_word == b.single_word;
}

// Hugging Face does not trust the ids written in tokenizer.json's added_tokens: it adds the tokens
// in order, giving each the id its content already has (an earlier added token, else the model
// vocabulary), or the next free id after the vocabulary. Files written by the library agree with
// that; for files that do not, the library's ids are the ones it encodes with, so they are ours.
// ref: tokenizers 0.19 AddedVocabulary::add_tokens.
std::vector<AddedToken> AssignIdsLikeHuggingFace(const std::vector<AddedToken>& tokens,
                                                 const BpeModel& model, size_t vocab_len) {
  std::vector<AddedToken> out;
  std::vector<std::pair<std::string, uint32_t>> by_content;  // few tokens: linear search is fine
  std::vector<std::string> special_contents;
  for (const AddedToken& t : tokens) {
    if (t.special) special_contents.push_back(t.content);
  }
  std::optional<uint32_t> max_id;
  for (const AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    bool duplicate = false;
    for (const AddedToken& o : out) duplicate = duplicate || SameToken(o, t);
    if (duplicate) continue;
    std::optional<uint32_t> id;
    for (const auto& [c, i] : by_content) {
      if (c == t.content) id = i;
    }
    if (!id) id = model.StringToId(t.content);
    if (!id) {
      id = (!max_id || (*max_id < vocab_len && vocab_len != 0)) ? static_cast<uint32_t>(vocab_len)
                                                                 : *max_id + 1;
    }
    by_content.emplace_back(t.content, *id);
    max_id = max_id ? std::max(*max_id, *id) : *id;
    AddedToken placed = t;
    placed.id = *id;
    bool replaced = false;
    for (AddedToken& o : out) {
      if (o.id == *id) {
        o = placed;
        replaced = true;
      }
    }
    if (!replaced) out.push_back(std::move(placed));
  }
  // Specialness belongs to the content: once special, always special.
  for (AddedToken& o : out) {
    for (const std::string& c : special_contents) o.special = o.special || o.content == c;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Build(
    const std::vector<std::pair<std::string, uint32_t>>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, BpeModel::Options options,
    std::vector<AddedToken> added, PreTokenizerOptions pre, const std::string& source,
    const std::string& merges_where, bool hf_added_ids) {
  auto model = BpeModel::Create(vocab, merges, options);
  if (!model.ok()) {
    return Error(source, merges_where, std::string(model.status().message()));
  }
  if (hf_added_ids) added = AssignIdsLikeHuggingFace(added, *model, vocab.size());
  return std::make_unique<Tokenizer>(std::move(*model), std::move(added), pre);
}

}  // namespace

namespace {
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerJsonImpl(std::string_view json_text,
                                                                 std::string_view source_name) {
  const std::string source(source_name);
  PHI_ASSIGN_OR_RETURN(const Json root, ParseJson(json_text, source));
  if (!root.is_object()) return Error(source, "/", "expected a JSON object");
  PHI_RETURN_IF_ERROR(CheckPipeline(root, source));
  PHI_ASSIGN_OR_RETURN(PreTokenizerOptions pre, ParsePreTokenizer(root, source));
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) return Error(source, "/model", "missing or not an object");
  const Json& model = *model_it;
  if (!model.contains("vocab")) return Error(source, "/model/vocab", "missing");
  if (!model.contains("merges")) return Error(source, "/model/merges", "missing");
  PHI_ASSIGN_OR_RETURN(auto vocab, ParseVocab(model["vocab"], source, "/model/vocab"));
  PHI_ASSIGN_OR_RETURN(BpeModel::Options options,
                       ParseModelOptions(model, source, AllBytesPresent(vocab)));
  PHI_ASSIGN_OR_RETURN(auto merges, ParseMerges(model["merges"], source, "/model/merges"));
  PHI_ASSIGN_OR_RETURN(std::vector<AddedToken> added, ParseAddedTokens(root, source));
  return Build(vocab, merges, options, std::move(added), pre, source, "/model",
               /*hf_added_ids=*/true);
}

}  // namespace

// nlohmann::json reports type mismatches the explicit checks above do not anticipate by
// exception; none may leave the library, so each entry point turns them into a Status.
#define PHI_JSON_GUARD(source, expr)                                                         \
  try {                                                                                     \
    return expr;                                                                            \
  } catch (const nlohmann::json::exception& e) {                                            \
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON: ", e.what())); \
  }

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerJson(std::string_view json_text,
                                                             std::string_view source) {
  PHI_JSON_GUARD(std::string(source), LoadTokenizerJsonImpl(json_text, source));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerJsonFile(const std::string& path) {
  PHI_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return LoadTokenizerJson(text, path);
}

namespace {

// A token value in tokenizer_config.json / special_tokens_map.json: "s", {"content": "s"} or null.
absl::StatusOr<std::optional<std::string>> TokenContent(const Json& obj, const char* key,
                                                        const std::string& source) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return std::optional<std::string>((*it)["content"].get<std::string>());
  }
  return Error(source, absl::StrCat("/", key), "expected a string, {\"content\": ...} or null");
}

absl::StatusOr<std::optional<Json>> ReadJsonIfExists(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::optional<Json>();
  PHI_ASSIGN_OR_RETURN(std::string text, ReadFile(path.string()));
  PHI_ASSIGN_OR_RETURN(Json j, ParseJson(text, path.string()));
  if (!j.is_object()) return Error(path.string(), "/", "expected a JSON object");
  return std::optional<Json>(std::move(j));
}

}  // namespace

namespace {

// bos/eos/pad/unk from tokenizer_config.json, then special_tokens_map.json (the first file wins,
// as in transformers).
absl::Status RolesFromTokenFiles(const std::optional<Json>& config,
                                 const std::optional<Json>& special_map, const fs::path& base,
                                 const Tokenizer& tokenizer, SpecialRoles* roles) {
  struct Role {
    const char* key;
    std::optional<uint32_t>* field;
  } role_keys[] = {{"bos_token", &roles->bos}, {"eos_token", &roles->eos},
                   {"pad_token", &roles->pad}, {"unk_token", &roles->unk}};
  std::pair<const std::optional<Json>*, fs::path> sources[] = {
      {&config, base / "tokenizer_config.json"}, {&special_map, base / "special_tokens_map.json"}};
  for (const auto& [json, path] : sources) {
    if (!json->has_value()) continue;
    for (const Role& r : role_keys) {
      if (r.field->has_value()) continue;
      PHI_ASSIGN_OR_RETURN(std::optional<std::string> content,
                           TokenContent(**json, r.key, path.string()));
      if (!content.has_value()) continue;
      std::optional<uint32_t> id = tokenizer.TokenToId(*content);
      if (!id) {
        return Error(path.string(), absl::StrCat("/", r.key),
                     absl::StrCat("'", *content, "' is not a token of this tokenizer"));
      }
      *r.field = id;
    }
  }
  return absl::OkStatus();
}

// A token id in generation_config.json, checked against the vocabulary.
absl::StatusOr<uint32_t> ReadGenerationId(const Json& v, const std::string& path,
                                          const std::string& where, const Tokenizer& tokenizer) {
  if (!v.is_number_unsigned()) return Error(path, where, "expected a non-negative token id");
  uint64_t wide = v.get<uint64_t>();
  uint32_t id = static_cast<uint32_t>(wide);
  if (wide >= kIdLimit || tokenizer.TokenBytes(id) == nullptr) {
    return Error(path, where, absl::StrCat("token id ", wide, " is outside the vocabulary"));
  }
  return id;
}

// generation_config.json's eos_token_id (one id or a list: the stop ids) and, where the token
// files named none, bos_token_id and pad_token_id.
absl::Status RolesFromGenerationConfig(const Json& g, const std::string& path,
                                       const Tokenizer& tokenizer, SpecialRoles* roles) {
  if (auto it = g.find("eos_token_id"); it != g.end() && !it->is_null()) {
    if (it->is_array()) {
      for (size_t i = 0; i < it->size(); ++i) {
        PHI_ASSIGN_OR_RETURN(
            uint32_t id, ReadGenerationId((*it)[i], path, absl::StrCat("/eos_token_id/", i), tokenizer));
        roles->stop_ids.push_back(id);
      }
    } else {
      PHI_ASSIGN_OR_RETURN(uint32_t id, ReadGenerationId(*it, path, "/eos_token_id", tokenizer));
      roles->stop_ids.push_back(id);
    }
    if (!roles->eos && !roles->stop_ids.empty()) roles->eos = roles->stop_ids.front();
  }
  for (auto [key, field] :
       {std::pair{"bos_token_id", &roles->bos}, std::pair{"pad_token_id", &roles->pad}}) {
    if (auto it = g.find(key); it != g.end() && !it->is_null() && !field->has_value()) {
      PHI_ASSIGN_OR_RETURN(*field, ReadGenerationId(*it, path, absl::StrCat("/", key), tokenizer));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SpecialRoles> LoadSpecialRolesImpl(const std::string& dir, const Tokenizer& tokenizer) {
  SpecialRoles roles;
  fs::path base(dir);
  PHI_ASSIGN_OR_RETURN(std::optional<Json> config, ReadJsonIfExists(base / "tokenizer_config.json"));
  PHI_ASSIGN_OR_RETURN(std::optional<Json> special_map,
                       ReadJsonIfExists(base / "special_tokens_map.json"));
  PHI_ASSIGN_OR_RETURN(std::optional<Json> generation,
                       ReadJsonIfExists(base / "generation_config.json"));
  PHI_RETURN_IF_ERROR(RolesFromTokenFiles(config, special_map, base, tokenizer, &roles));
  roles.im_start = tokenizer.TokenToId("<|im_start|>");
  roles.im_end = tokenizer.TokenToId("<|im_end|>");
  if (generation.has_value()) {
    PHI_RETURN_IF_ERROR(RolesFromGenerationConfig(
        *generation, (base / "generation_config.json").string(), tokenizer, &roles));
  }
  if (roles.eos && std::find(roles.stop_ids.begin(), roles.stop_ids.end(), *roles.eos) ==
                       roles.stop_ids.end()) {
    roles.stop_ids.push_back(*roles.eos);
  }
  return roles;
}

}  // namespace

absl::StatusOr<SpecialRoles> LoadSpecialRoles(const std::string& dir, const Tokenizer& tokenizer) {
  PHI_JSON_GUARD(dir, LoadSpecialRolesImpl(dir, tokenizer));
}

namespace {

using VocabList = std::vector<std::pair<std::string, uint32_t>>;
using MergeList = std::vector<std::pair<std::string, std::string>>;

// merges.txt: one "a b" pair a line, an optional "#version" first line.
absl::StatusOr<MergeList> ReadMergesTxt(const std::string& merges_path) {
  PHI_ASSIGN_OR_RETURN(std::string merges_text, ReadFile(merges_path));
  MergeList merges;
  std::istringstream lines(merges_text);
  std::string line;
  for (int line_no = 1; std::getline(lines, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(merges_path, ":", line_no, ": merge '", line,
                                                     "' is not two tokens separated by a space"));
    }
    merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  return merges;
}

AddedToken* FindAdded(std::vector<AddedToken>& added, std::string_view content) {
  for (AddedToken& t : added) {
    if (t.content == content) return &t;
  }
  return nullptr;
}

// added_tokens.json: {"content": id, ...}.
absl::Status AddFromAddedTokensJson(const Json& added_json, const std::string& path,
                                    std::vector<AddedToken>* added) {
  for (auto it = added_json.begin(); it != added_json.end(); ++it) {
    if (!it.value().is_number_unsigned() || it.value().get<uint64_t>() >= kIdLimit) {
      return Error(path, absl::StrCat("/", it.key()), "expected a token id below 2^21");
    }
    AddedToken t;
    t.content = it.key();
    t.id = it.value().get<uint32_t>();
    added->push_back(std::move(t));
  }
  return absl::OkStatus();
}

// tokenizer_config.json's added_tokens_decoder: {"id": {"content": ..., flags}}; adds tokens
// not yet known and sets the flags of all it names.
absl::Status AddFromAddedTokensDecoder(const Json& dec, const std::string& path,
                                       std::vector<AddedToken>* added) {
  for (auto it = dec.begin(); it != dec.end(); ++it) {
    std::string where = absl::StrCat("/added_tokens_decoder/", it.key());
    const Json& t = it.value();
    if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) {
      return Error(path, where, "expected {\"content\": <string>, ...}");
    }
    std::string content = t["content"].get<std::string>();
    AddedToken* a = FindAdded(*added, content);
    if (a == nullptr) {
      AddedToken fresh;
      fresh.content = content;
      if (!absl::SimpleAtoi(it.key(), &fresh.id) || fresh.id >= kIdLimit) {
        return Error(path, where, "key must be a token id below 2^21");
      }
      added->push_back(std::move(fresh));
      a = &added->back();
    }
    for (auto [key, field] : {std::pair{"special", &a->special}, std::pair{"normalized", &a->normalized},
                              std::pair{"lstrip", &a->lstrip}, std::pair{"rstrip", &a->rstrip},
                              std::pair{"single_word", &a->single_word}}) {
      PHI_ASSIGN_OR_RETURN(*field, GetBool(t, key, *field, path, where));
    }
  }
  return absl::OkStatus();
}

// The role tokens and additional_special_tokens of the config files, in file order.
std::vector<std::string> SpecialContents(const std::optional<Json>& config,
                                         const std::optional<Json>& special_map) {
  std::vector<std::string> specials;
  for (const auto* json : {&config, &special_map}) {
    if (!json->has_value()) continue;
    for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
      auto content = TokenContent(**json, key, "special tokens");
      if (content.ok() && content->has_value()) specials.push_back(**content);
    }
    if (auto it = (*json)->find("additional_special_tokens"); it != (*json)->end() && it->is_array()) {
      for (const Json& v : *it) {
        if (v.is_string()) specials.push_back(v.get<std::string>());
        else if (v.is_object() && v.contains("content")) specials.push_back(v["content"].get<std::string>());
      }
    }
  }
  return specials;
}

// Special contents become special added tokens: flagged where already added, else added with
// their vocabulary id.
void MarkSpecials(const std::vector<std::string>& specials, const VocabList& vocab,
                  std::vector<AddedToken>* added) {
  for (const std::string& content : specials) {
    if (AddedToken* a = FindAdded(*added, content)) {
      a->special = true;
      continue;
    }
    std::optional<uint32_t> id;
    for (const auto& [s, vid] : vocab) {
      if (s == content) id = vid;
    }
    if (!id) continue;  // LoadSpecialRoles reports role tokens that do not exist
    AddedToken t;
    t.content = content;
    t.id = *id;
    t.special = true;
    t.normalized = false;
    added->push_back(std::move(t));
  }
}

// vocab.json + merges.txt + added_tokens.json, with flags from tokenizer_config.json's
// added_tokens_decoder and specialness from the role tokens, as transformers builds it.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadVocabMergesFolder(const fs::path& base) {
  std::string vocab_path = (base / "vocab.json").string();
  PHI_ASSIGN_OR_RETURN(std::string vocab_text, ReadFile(vocab_path));
  PHI_ASSIGN_OR_RETURN(Json vocab_json, ParseJson(vocab_text, vocab_path));
  PHI_ASSIGN_OR_RETURN(VocabList vocab, ParseVocab(vocab_json, vocab_path, ""));
  PHI_ASSIGN_OR_RETURN(MergeList merges, ReadMergesTxt((base / "merges.txt").string()));
  PHI_ASSIGN_OR_RETURN(std::optional<Json> config, ReadJsonIfExists(base / "tokenizer_config.json"));
  PHI_ASSIGN_OR_RETURN(std::optional<Json> special_map,
                       ReadJsonIfExists(base / "special_tokens_map.json"));
  PHI_ASSIGN_OR_RETURN(std::optional<Json> added_json, ReadJsonIfExists(base / "added_tokens.json"));

  std::vector<AddedToken> added;
  if (added_json.has_value()) {
    PHI_RETURN_IF_ERROR(
        AddFromAddedTokensJson(*added_json, (base / "added_tokens.json").string(), &added));
  }
  PreTokenizerOptions pre;
  if (config.has_value()) {
    const Json& c = *config;
    std::string path = (base / "tokenizer_config.json").string();
    PHI_ASSIGN_OR_RETURN(pre.add_prefix_space, GetBool(c, "add_prefix_space", false, path, ""));
    if (auto dec = c.find("added_tokens_decoder"); dec != c.end() && dec->is_object()) {
      PHI_RETURN_IF_ERROR(AddFromAddedTokensDecoder(*dec, path, &added));
    }
  }
  MarkSpecials(SpecialContents(config, special_map), vocab, &added);
  return Build(vocab, merges, BpeModel::Options{}, std::move(added), pre,
               (base / "merges.txt").string(), "", /*hf_added_ids=*/false);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFolder(const std::string& dir) {
  fs::path base(dir);
  std::error_code ec;
  if (!fs::is_directory(base, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok;
  if (fs::exists(base / "tokenizer.json", ec)) {
    tok = LoadTokenizerJsonFile((base / "tokenizer.json").string());
  } else if (fs::exists(base / "vocab.json", ec)) {
    tok = [&]() -> absl::StatusOr<std::unique_ptr<Tokenizer>> {
      PHI_JSON_GUARD(dir, LoadVocabMergesFolder(base));
    }();
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither tokenizer.json nor vocab.json + merges.txt found"));
  }
  if (!tok.ok()) return tok.status();
  PHI_ASSIGN_OR_RETURN(SpecialRoles roles, LoadSpecialRoles(dir, **tok));
  (*tok)->set_roles(std::move(roles));
  return tok;
}

}  // namespace phi::tokenizer
