#include "services/worker/engine/kv_block_manager.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace phi::worker {

KvBlockManager::KvBlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_cache)
    : num_blocks_(num_blocks), block_size_(block_size), enable_prefix_cache_(enable_prefix_cache),
      blocks_(num_blocks) {
  free_.reserve(num_blocks);
  // Handed out in increasing id order at first (pop from the back).
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::optional<int32_t> KvBlockManager::Allocate() {
  int32_t block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    block = lru_.front();
    lru_.pop_front();
    Block& b = blocks_[block];
    by_hash_.erase(b.hash);
    b.cached = false;
  } else {
    return std::nullopt;
  }
  blocks_[block].refcount = 1;
  return block;
}

void KvBlockManager::Release(int32_t block) {
  Block& b = blocks_[block];
  if (b.refcount <= 0) {
    // A double release would corrupt the cache for other requests: fail loudly.
    std::fprintf(stderr, "KvBlockManager: release of free block %d\n", block);
    std::abort();
  }
  if (--b.refcount > 0) return;
  if (b.cached) {
    b.lru_pos = lru_.insert(lru_.end(), block);
  } else {
    free_.push_back(block);
  }
}

std::vector<int32_t> KvBlockManager::AcquirePrefix(std::span<const uint64_t> hashes) {
  std::vector<int32_t> found;
  if (!enable_prefix_cache_) return found;
  for (uint64_t h : hashes) {
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const int32_t block = it->second;
    Block& b = blocks_[block];
    if (b.refcount == 0) lru_.erase(b.lru_pos);
    ++b.refcount;
    b.last_touch = ++touch_clock_;
    found.push_back(block);
  }
  return found;
}

void KvBlockManager::RegisterFull(int32_t block, uint64_t hash, uint64_t root) {
  if (!enable_prefix_cache_) return;
  Block& b = blocks_[block];
  if (b.cached || by_hash_.count(hash) != 0) return;
  b.cached = true;
  b.hash = hash;
  b.root = root;
  b.last_touch = ++touch_clock_;
  by_hash_.emplace(hash, block);
}

int32_t KvBlockManager::ForgetChain(uint64_t root) {
  int32_t forgotten = 0;
  for (int32_t block = 0; block < num_blocks_; ++block) {
    Block& b = blocks_[block];
    if (!b.cached || b.root != root) continue;
    by_hash_.erase(b.hash);
    b.cached = false;
    if (b.refcount == 0) {
      lru_.erase(b.lru_pos);
      free_.push_back(block);
    }
    ++forgotten;
  }
  return forgotten;
}

std::vector<uint64_t> KvBlockManager::CachedHashes(int32_t max) const {
  std::vector<std::pair<uint64_t, uint64_t>> by_touch;  // (last_touch, hash)
  by_touch.reserve(by_hash_.size());
  for (const auto& [hash, block] : by_hash_) by_touch.emplace_back(blocks_[block].last_touch, hash);
  const size_t k = std::min<size_t>(by_touch.size(), std::max(0, max));
  std::partial_sort(by_touch.begin(), by_touch.begin() + k, by_touch.end(), std::greater<>());
  std::vector<uint64_t> out;
  out.reserve(k);
  for (size_t i = 0; i < k; ++i) out.push_back(by_touch[i].second);
  return out;
}

}  // namespace phi::worker
