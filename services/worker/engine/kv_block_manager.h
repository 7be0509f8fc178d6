// Owner of the KV cache's block ids: a free list, reference counts, and the automatic prefix
// cache. A block is in exactly one of three states:
//   free       refcount 0, no content worth keeping, on the free list;
//   in use     refcount > 0 (held by one sequence, or shared by several through the cache);
//   cached     refcount 0 but holding a full block registered under its chained hash, kept in
//              LRU order and evicted (oldest release first) only when a fresh block is needed.
// Only full blocks are ever shared, and a sequence writes only into its last, partial block, so
// shared blocks are read-only and no copy-on-write is needed. Not thread-safe: the engine
// thread alone calls it. ref: vLLM's block manager / "PagedAttention" (Kwon et al., SOSP'23).
#ifndef PHI_SERVICES_WORKER_ENGINE_KV_BLOCK_MANAGER_H_
#define PHI_SERVICES_WORKER_ENGINE_KV_BLOCK_MANAGER_H_

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace phi::worker {

class KvBlockManager {
 public:
  KvBlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_cache);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  bool prefix_cache_enabled() const { return enable_prefix_cache_; }
  // Blocks that Allocate can still hand out: free plus cached-and-unreferenced.
  int32_t num_available() const { return static_cast<int32_t>(free_.size() + lru_.size()); }
  // Blocks held by at least one sequence.
  int32_t num_used() const { return num_blocks_ - num_available(); }
  int32_t num_cached() const { return static_cast<int32_t>(by_hash_.size()); }

  // A block for one sequence's exclusive use (refcount 1): from the free list, else by
  // evicting the least recently released cached block. nullopt when every block is in use.
  std::optional<int32_t> Allocate();

  // Drops one reference. At zero the block returns to the free list, or, when it is
  // registered in the prefix cache, becomes the most recently used evictable block.
  void Release(int32_t block);

  // The longest run of cached blocks whose chained hashes are `hashes[0..]` (one per full
  // block of the prompt, in order); takes a reference on each.
  std::vector<int32_t> AcquirePrefix(std::span<const uint64_t> hashes);

  // Registers a full block, just written by its sequence, under its chained hash (a chain
  // from `root`: common::PrefixHashRoot of the sequence's adapter). When the hash is already
  // cached under another block (two sequences computed the same prefix at once), nothing
  // changes and that block stays private to its sequence.
  void RegisterFull(int32_t block, uint64_t hash, uint64_t root);

  // Drops every cached block of chains from `root` (an unloaded LoRA adapter, whose name may
  // be loaded again with other weights): unreferenced ones become free, referenced ones
  // private to their holders. Returns how many left the cache.
  int32_t ForgetChain(uint64_t root);

  // Hashes of cached blocks, most recently registered or reused first, at most `max`.
  std::vector<uint64_t> CachedHashes(int32_t max) const;

  int32_t refcount(int32_t block) const { return blocks_[block].refcount; }

 private:
  struct Block {
    int32_t refcount = 0;
    bool cached = false;                       // registered under `hash`
    uint64_t hash = 0;
    uint64_t root = 0;                         // of the chain `hash` belongs to
    std::list<int32_t>::iterator lru_pos;      // valid while cached with refcount 0
    uint64_t last_touch = 0;                   // for CachedHashes ordering
  };

  int32_t num_blocks_;
  int32_t block_size_;
  bool enable_prefix_cache_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;                  // LIFO: recently freed blocks are warm in cache
  std::list<int32_t> lru_;                     // cached, unreferenced; front = oldest release
  std::unordered_map<uint64_t, int32_t> by_hash_;
  uint64_t touch_clock_ = 0;
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_KV_BLOCK_MANAGER_H_
