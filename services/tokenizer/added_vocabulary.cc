#include "services/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "services/tokenizer/unicode_class.h"
#include "services/tokenizer/utf8.h"

namespace phi::tokenizer {
namespace {

// Class of the last character of s (valid UTF-8), or kOther for empty s.
CharClass LastCharClass(std::string_view s) {
  if (s.empty()) return CharClass::kOther;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  char32_t cp;
  DecodeUtf8(reinterpret_cast<const unsigned char*>(s.data()) + i, &cp);
  return cp == '_' ? CharClass::kConnector : ClassifyCodepoint(cp);
}

CharClass FirstCharClass(std::string_view s) {
  if (s.empty()) return CharClass::kOther;
  char32_t cp;
  DecodeUtf8(reinterpret_cast<const unsigned char*>(s.data()), &cp);
  return cp == '_' ? CharClass::kConnector : ClassifyCodepoint(cp);
}

// Start of the run of whitespace that ends s.
size_t LeftmostSpaceAtEnd(std::string_view s) {
  size_t i = s.size();
  while (i > 0) {
    size_t j = i - 1;
    while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
    char32_t cp;
    DecodeUtf8(reinterpret_cast<const unsigned char*>(s.data()) + j, &cp);
    if (ClassifyCodepoint(cp) != CharClass::kSpace) break;
    i = j;
  }
  return i;
}

// Length of the run of whitespace that starts s.
size_t RightmostSpaceAtStart(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp;
    int len = DecodeUtf8(reinterpret_cast<const unsigned char*>(s.data()) + i, &cp);
    if (ClassifyCodepoint(cp) != CharClass::kSpace) break;
    i += len;
  }
  return i;
}

}  // namespace

AddedVocabulary::Trie::Trie() {
  next.emplace_back();
  next.back().fill(-1);
  token.push_back(-1);
}

void AddedVocabulary::Trie::Insert(std::string_view s, int32_t token_index) {
  if (s.empty()) return;
  first[static_cast<unsigned char>(s[0])] = true;
  int32_t node = 0;
  for (unsigned char b : s) {
    if (next[node][b] < 0) {
      next[node][b] = static_cast<int32_t>(next.size());
      next.emplace_back();
      next.back().fill(-1);
      token.push_back(-1);
    }
    node = next[node][b];
  }
  // The first token with a given content wins, like the first pattern in an Aho-Corasick set.
  if (token[node] < 0) token[node] = token_index;
}

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  // Hugging Face builds its matchers from the special tokens first, then the others.
  std::vector<int32_t> order;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].special) order.push_back(static_cast<int32_t>(i));
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (!tokens_[i].special) order.push_back(static_cast<int32_t>(i));
  }
  for (int32_t i : order) {
    (tokens_[i].normalized ? normalized_ : raw_).Insert(tokens_[i].content, i);
  }
}

bool AddedVocabulary::FindMatch(const Trie& trie, std::string_view text, size_t from,
                                Match* m) const {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = from; i < n; ++i) {
    if (!trie.first[p[i]]) continue;
    int32_t node = 0;
    int32_t best = -1;
    size_t best_end = 0;
    for (size_t j = i; j < n; ++j) {
      node = trie.next[node][p[j]];
      if (node < 0) break;
      if (trie.token[node] >= 0) {
        best = trie.token[node];
        best_end = j + 1;
      }
    }
    if (best >= 0) {
      *m = Match{i, best_end, best};
      return true;
    }
  }
  return false;
}

void AddedVocabulary::SplitWith(const Trie& trie, std::string_view text, size_t base,
                                bool parse_special, std::vector<TextSplit>* out) const {
  size_t start_offset = 0;
  size_t from = 0;
  Match m;
  while (from < text.size() && FindMatch(trie, text, from, &m)) {
    from = m.end;  // matches do not overlap, even when one is then discarded
    const AddedToken& tok = tokens_[m.token_index];
    if (tok.special && !parse_special) continue;
    size_t start = m.begin;
    size_t stop = m.end;
    if (tok.single_word) {
      bool start_space = start == 0 || !IsWordClass(LastCharClass(text.substr(0, start)));
      bool stop_space = stop == text.size() || !IsWordClass(FirstCharClass(text.substr(stop)));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) start = std::max(LeftmostSpaceAtEnd(text.substr(0, start)), start_offset);
    if (tok.rstrip) stop += RightmostSpaceAtStart(text.substr(stop));
    if (start_offset < start) out->push_back({base + start_offset, base + start});
    out->push_back({base + start, base + stop, tok.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out->push_back({base + start_offset, base + text.size()});
}

void AddedVocabulary::Split(std::string_view text, bool parse_special,
                            std::vector<TextSplit>* out) const {
  if (text.empty()) return;
  if (tokens_.empty()) {
    out->push_back({0, text.size()});
    return;
  }
  if (raw_.empty()) {
    SplitWith(normalized_, text, 0, parse_special, out);
    return;
  }
  size_t first = out->size();
  SplitWith(raw_, text, 0, parse_special, out);
  if (normalized_.empty()) return;
  // Second pass over the plain-text pieces of the first.
  std::vector<TextSplit> pass1(out->begin() + first, out->end());
  out->resize(first);
  for (const TextSplit& s : pass1) {
    if (s.token != TextSplit::kNoToken) {
      out->push_back(s);
    } else {
      SplitWith(normalized_, text.substr(s.begin, s.end - s.begin), s.begin, parse_special, out);
    }
  }
}

}  // namespace phi::tokenizer
