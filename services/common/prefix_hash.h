// The chained hash that keys a full KV block in the worker's prefix cache: block k's hash covers
// every token from position 0 to the end of block k, so two sequences share a cached block only
// when their whole prefixes agree. The gateway computes the same hash over its prompt ids for
// prefix-aware routing (GetStatusResponse.cached_block_hashes), so the definition is part of the
// contract between the two (target phi_prefix_hash, header-only):
//
//   h = parent (for block 0: PrefixHashRoot(adapter), kPrefixHashRoot for the base model)
//   for each token t of the block: h = (h ^ uint32(t)) * 0x100000001b3   (FNV-1a step, 64-bit)
//   hash = SplitMix64(h)                                                   (final avalanche)
#ifndef PHI_SERVICES_COMMON_PREFIX_HASH_H_
#define PHI_SERVICES_COMMON_PREFIX_HASH_H_

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace phi::common {

inline constexpr uint64_t kPrefixHashRoot = 0xcbf29ce484222325ull;  // FNV-1a offset basis

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t ChainBlockHash(uint64_t parent, std::span<const int32_t> block_tokens) {
  uint64_t h = parent;
  for (int32_t t : block_tokens) h = (h ^ static_cast<uint32_t>(t)) * 0x100000001b3ull;
  return SplitMix64(h);
}

// The root of a chain: KV computed under a LoRA adapter differs from the base model's, so the
// adapter's name (empty: the base model) seeds the chain and two adapters never share a block.
//   root = SplitMix64(FNV-1a over the name's bytes, from kPrefixHashRoot)
inline uint64_t PrefixHashRoot(std::string_view adapter) {
  if (adapter.empty()) return kPrefixHashRoot;
  uint64_t h = kPrefixHashRoot;
  for (char c : adapter) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return SplitMix64(h);
}

// Hashes of the first `num_blocks` full blocks of `tokens`, a chain from `root`.
inline std::vector<uint64_t> PrefixBlockHashes(std::span<const int32_t> tokens, int32_t block_size,
                                               int32_t num_blocks, uint64_t root = kPrefixHashRoot) {
  std::vector<uint64_t> hashes;
  hashes.reserve(num_blocks);
  uint64_t h = root;
  for (int32_t b = 0; b < num_blocks; ++b) {
    h = ChainBlockHash(h, tokens.subspan(static_cast<size_t>(b) * block_size, block_size));
    hashes.push_back(h);
  }
  return hashes;
}

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_PREFIX_HASH_H_
