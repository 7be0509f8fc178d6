#include "services/tokenizer/bpe_model.h"

#include <atomic>
#include <cstring>
#include <queue>

#include <sys/mman.h>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "services/tokenizer/byte_level.h"

namespace phi::tokenizer {
namespace {

std::atomic<uint32_t> g_next_cache_tag{1};

// Direct-mapped per-thread cache of short pre-tokens: fixed memory, no allocation on hit or
// insert, and a word's ids are one cache line away. Words that do not fit are merged each time.
// The slots are fresh anonymous pages: a new thread (gRPC's sync server starts them as load
// grows) touches only the pages its words land on, instead of writing 1 MiB before its first
// encode; a slot belongs to the model whose tag it holds, so a thread that alternates between
// tokenizers never clears anything.
struct WordCache {
  static constexpr int kSlots = 1 << 14;  // 1 MiB of address space per thread
  static constexpr int kMaxKey = 22;
  static constexpr int kMaxIds = 8;
  struct Slot {
    uint32_t tag;  // the owning model's tag; 0 (a page never written) is empty
    uint8_t key_len;
    uint8_t n_ids;
    char key[kMaxKey];
    uint32_t ids[kMaxIds];
  };
  static_assert(sizeof(Slot) <= 64, "a slot is one cache line");
  static constexpr size_t kBytes = sizeof(Slot) * kSlots;

  Slot* slots = nullptr;

  ~WordCache() {
    if (slots) munmap(slots, kBytes);
  }

  // nullptr when the pages cannot be had (the caller then merges without a cache).
  Slot* Lookup(uint32_t tag, std::string_view word) {
    if (!slots) {
      void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return nullptr;
      slots = static_cast<Slot*>(p);
    }
    size_t h = absl::HashOf(absl::string_view(word.data(), word.size()), tag);
    return &slots[h & (kSlots - 1)];
  }
};

thread_local WordCache t_cache;

}  // namespace

absl::StatusOr<BpeModel> BpeModel::Create(
    const std::vector<std::pair<std::string, uint32_t>>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, Options options) {
  BpeModel m;
  m.options_ = options;
  m.cache_tag_ = g_next_cache_tag.fetch_add(1);
  if (m.cache_tag_ == 0) m.cache_tag_ = g_next_cache_tag.fetch_add(1);  // 0 marks empty slots
  uint32_t limit = 0;
  for (const auto& [s, id] : vocab) limit = std::max(limit, id + 1);
  m.id_to_string_.resize(limit);
  m.has_id_.assign(limit, false);
  m.string_to_id_.reserve(vocab.size());
  for (const auto& [s, id] : vocab) {
    if (m.has_id_[id]) {
      return absl::InvalidArgumentError(absl::StrCat("vocab: id ", id, " is used by both '",
                                                     m.id_to_string_[id], "' and '", s, "'"));
    }
    m.id_to_string_[id] = s;
    m.has_id_[id] = true;
    m.string_to_id_[s] = id;
    m.bytes_to_id_[ByteLevelTokenBytes(s)] = id;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m.string_to_id_.find(BytesToByteLevelString(std::string(1, static_cast<char>(b))));
    m.byte_id_[b] = it == m.string_to_id_.end() ? -1 : int64_t{it->second};
  }
  m.merges_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    auto ia = m.string_to_id_.find(a);
    auto ib = m.string_to_id_.find(b);
    auto im = m.string_to_id_.find(a + b);
    if (ia == m.string_to_id_.end() || ib == m.string_to_id_.end() ||
        im == m.string_to_id_.end()) {
      const std::string& missing =
          ia == m.string_to_id_.end() ? a : (ib == m.string_to_id_.end() ? b : a + b);
      return absl::InvalidArgumentError(absl::StrCat("merges[", r, "] ('", a, "', '", b, "'): '",
                                                     missing, "' is not in the vocabulary"));
    }
    // A repeated pair takes its last rank: Hugging Face collects merges into a map in order.
    m.merges_[PairKey(ia->second, ib->second)] = MergeEntry{static_cast<uint32_t>(r), im->second};
  }
  return m;
}

std::optional<uint32_t> BpeModel::StringToId(std::string_view s) const {
  // Debian's Abseil has its own string_view type: convert for heterogeneous lookup.
  auto it = string_to_id_.find(absl::string_view(s.data(), s.size()));
  if (it == string_to_id_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::EncodeWord(std::string_view word, std::vector<uint32_t>* ids) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    int64_t id = byte_id_[static_cast<unsigned char>(word[0])];
    if (id >= 0) ids->push_back(static_cast<uint32_t>(id));
    return;
  }
  if (word.size() > WordCache::kMaxKey) {
    Merge(word, ids);
    return;
  }
  WordCache::Slot* slot = t_cache.Lookup(cache_tag_, word);
  if (slot == nullptr) {
    Merge(word, ids);
    return;
  }
  if (slot->tag == cache_tag_ && slot->key_len == word.size() &&
      std::memcmp(slot->key, word.data(), word.size()) == 0) {
    ids->insert(ids->end(), slot->ids, slot->ids + slot->n_ids);
    return;
  }
  size_t before = ids->size();
  Merge(word, ids);
  size_t produced = ids->size() - before;
  if (produced <= WordCache::kMaxIds) {
    slot->tag = cache_tag_;
    slot->key_len = static_cast<uint8_t>(word.size());
    std::memcpy(slot->key, word.data(), word.size());
    slot->n_ids = static_cast<uint8_t>(produced);
    std::memcpy(slot->ids, ids->data() + before, produced * sizeof(uint32_t));
  }
}

void BpeModel::Merge(std::string_view word, std::vector<uint32_t>* ids) const {
  if (options_.ignore_merges) {
    auto it = bytes_to_id_.find(absl::string_view(word.data(), word.size()));
    if (it != bytes_to_id_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (word.size() <= 256) {
    MergeShort(word, ids);
  } else {
    MergeLong(word, ids);
  }
}

// Lowest rank first, leftmost among equal ranks (the same pair at several places), which is the
// order of Hugging Face's merge heap. O(n^2) with tiny constants: right for short words.
void BpeModel::MergeShort(std::string_view word, std::vector<uint32_t>* ids) const {
  uint32_t sym[256];
  uint32_t rank[256];    // rank[i]: rank of the pair (sym[i], sym[i+1])
  uint32_t merged[256];  // merged[i]: the id that pair makes
  int n = 0;
  for (unsigned char b : word) {
    int64_t id = byte_id_[b];
    if (id >= 0) sym[n++] = static_cast<uint32_t>(id);  // bytes missing from the vocab vanish, as in HF
  }
  for (int i = 0; i + 1 < n; ++i) rank[i] = Rank(sym[i], sym[i + 1], &merged[i]);
  while (n > 1) {
    int best = -1;
    uint32_t best_rank = kNoRank;
    for (int i = 0; i + 1 < n; ++i) {
      if (rank[i] < best_rank) {
        best_rank = rank[i];
        best = i;
      }
    }
    if (best < 0) break;
    sym[best] = merged[best];
    // Remove sym[best + 1] and the pair entry at best.
    std::memmove(sym + best + 1, sym + best + 2, (n - best - 2) * sizeof(uint32_t));
    std::memmove(rank + best, rank + best + 1, (n - best - 2) * sizeof(uint32_t));
    std::memmove(merged + best, merged + best + 1, (n - best - 2) * sizeof(uint32_t));
    --n;
    if (best > 0) rank[best - 1] = Rank(sym[best - 1], sym[best], &merged[best - 1]);
    if (best + 1 < n) rank[best] = Rank(sym[best], sym[best + 1], &merged[best]);
  }
  ids->insert(ids->end(), sym, sym + n);
}

// Heap of (rank, position) with lazy invalidation over a linked list: O(n log n) for the
// pathological long words (minified code, base64, runs of one character).
void BpeModel::MergeLong(std::string_view word, std::vector<uint32_t>* ids) const {
  struct Sym {
    uint32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Sym> syms;
  syms.reserve(word.size());
  for (unsigned char b : word) {
    int64_t id = byte_id_[b];
    if (id < 0) continue;
    int32_t k = static_cast<int32_t>(syms.size());
    syms.push_back({static_cast<uint32_t>(id), k - 1, k + 1, true});
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  using Entry = uint64_t;  // rank << 32 | position
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  uint32_t unused = 0;
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    uint32_t r = Rank(syms[i].id, syms[i + 1].id, &unused);
    if (r != kNoRank) heap.push((uint64_t{r} << 32) | i);
  }
  while (!heap.empty()) {
    Entry e = heap.top();
    heap.pop();
    uint32_t r = static_cast<uint32_t>(e >> 32);
    int32_t pos = static_cast<int32_t>(e & 0xFFFFFFFFu);
    Sym& s = syms[pos];
    if (!s.alive || s.next < 0) continue;
    uint32_t new_id = 0;
    if (Rank(s.id, syms[s.next].id, &new_id) != r) continue;  // stale: a neighbour changed
    Sym& t = syms[s.next];
    t.alive = false;
    s.id = new_id;
    s.next = t.next;
    if (t.next >= 0) syms[t.next].prev = pos;
    if (s.prev >= 0) {
      uint32_t pr = Rank(syms[s.prev].id, s.id, &unused);
      if (pr != kNoRank) heap.push((uint64_t{pr} << 32) | static_cast<uint32_t>(s.prev));
    }
    if (s.next >= 0) {
      uint32_t nr = Rank(s.id, syms[s.next].id, &unused);
      if (nr != kNoRank) heap.push((uint64_t{nr} << 32) | static_cast<uint32_t>(pos));
    }
  }
  for (int32_t k = 0; k >= 0; k = syms[k].next) ids->push_back(syms[k].id);
}

}  // namespace phi::tokenizer
