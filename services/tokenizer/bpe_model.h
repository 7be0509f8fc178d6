// The byte-level BPE model: vocabulary, ranked merges, and the merge loop with a per-thread cache
// of pre-token -> ids. Works on raw bytes; the byte-level character strings of tokenizer.json are
// translated once at load time.
#ifndef PHI_SERVICES_TOKENIZER_BPE_MODEL_H_
#define PHI_SERVICES_TOKENIZER_BPE_MODEL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace phi::tokenizer {

class BpeModel {
 public:
  struct Options {
    // Hugging Face BPE `ignore_merges`: a pre-token that is itself in the vocabulary is one token.
    bool ignore_merges = false;
  };

  // vocab: (vocabulary string in byte-level characters, id); merges: pairs of vocabulary strings
  // in rank order. Errors name the offending entry by index ("vocab 'x'", "merges[12]").
  static absl::StatusOr<BpeModel> Create(const std::vector<std::pair<std::string, uint32_t>>& vocab,
                                         const std::vector<std::pair<std::string, std::string>>& merges,
                                         Options options);

  BpeModel(BpeModel&&) = default;
  BpeModel& operator=(BpeModel&&) = default;

  // Appends the ids of one pre-token given as raw bytes. Thread-safe.
  void EncodeWord(std::string_view word, std::vector<uint32_t>* ids) const;

  // One past the largest id.
  uint32_t id_limit() const { return static_cast<uint32_t>(id_to_string_.size()); }
  // Vocabulary string of an id, or nullptr for ids with no entry.
  const std::string* IdToString(uint32_t id) const {
    return id < id_to_string_.size() && has_id_[id] ? &id_to_string_[id] : nullptr;
  }
  std::optional<uint32_t> StringToId(std::string_view s) const;
  size_t num_merges() const { return merges_.size(); }

 private:
  struct MergeEntry {
    uint32_t rank;
    uint32_t new_id;
  };
  static uint64_t PairKey(uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; }
  uint32_t Rank(uint32_t a, uint32_t b, uint32_t* new_id) const {
    auto it = merges_.find(PairKey(a, b));
    if (it == merges_.end()) return kNoRank;
    *new_id = it->second.new_id;
    return it->second.rank;
  }
  void MergeShort(std::string_view word, std::vector<uint32_t>* ids) const;
  void MergeLong(std::string_view word, std::vector<uint32_t>* ids) const;
  void Merge(std::string_view word, std::vector<uint32_t>* ids) const;

  static constexpr uint32_t kNoRank = 0xFFFFFFFFu;
  BpeModel() = default;

  Options options_;
  uint32_t cache_tag_ = 0;  // this model's slots in the per-thread word cache (never 0)
  std::vector<std::string> id_to_string_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<std::string, uint32_t> string_to_id_;
  absl::flat_hash_map<std::string, uint32_t> bytes_to_id_;  // raw bytes -> id (ignore_merges)
  int64_t byte_id_[256];  // id of each single byte, -1 when the vocabulary lacks it
  absl::flat_hash_map<uint64_t, MergeEntry> merges_;
};

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_BPE_MODEL_H_
