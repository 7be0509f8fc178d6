#include "services/worker/engine/kv_block_manager.h"

#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "services/common/prefix_hash.h"

namespace phi::worker {
namespace {

using common::ChainBlockHash;
using common::PrefixBlockHashes;

constexpr uint64_t kRoot = common::kPrefixHashRoot;  // the base model's chains

TEST(BlockHashTest, ChainsOverTheWholePrefix) {
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int32_t> b = a;
  b[0] = 9;  // differs only in the first block
  const auto ha = PrefixBlockHashes(a, 4, 2), hb = PrefixBlockHashes(b, 4, 2);
  EXPECT_NE(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]);  // the second block's tokens agree, its prefix does not
  EXPECT_EQ(ha[1], ChainBlockHash(ha[0], std::span<const int32_t>(a).subspan(4, 4)));
  EXPECT_EQ(ha, PrefixBlockHashes(a, 4, 2));
}

TEST(KvBlockManagerTest, AllocatesEveryBlockOnceThenRunsOut) {
  KvBlockManager m(4, 16, true);
  std::set<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    auto b = m.Allocate();
    ASSERT_TRUE(b.has_value());
    got.insert(*b);
  }
  EXPECT_EQ(got.size(), 4u);
  EXPECT_FALSE(m.Allocate().has_value());
  EXPECT_EQ(m.num_used(), 4);
  for (int32_t b : got) m.Release(b);
  EXPECT_EQ(m.num_used(), 0);
  EXPECT_EQ(m.num_available(), 4);
}

TEST(KvBlockManagerTest, SharesRegisteredBlocksWithReferenceCounts) {
  KvBlockManager m(4, 16, true);
  const int32_t b0 = *m.Allocate(), b1 = *m.Allocate();
  m.RegisterFull(b0, 100, kRoot);
  m.RegisterFull(b1, 200, kRoot);
  const std::vector<uint64_t> hashes = {100, 200, 300};
  std::vector<int32_t> found = m.AcquirePrefix(hashes);
  EXPECT_EQ(found, (std::vector<int32_t>{b0, b1}));
  EXPECT_EQ(m.refcount(b0), 2);
  m.Release(b0);
  m.Release(b1);
  EXPECT_EQ(m.num_used(), 2);  // still held by the second owner
  m.Release(b0);
  m.Release(b1);
  EXPECT_EQ(m.num_used(), 0);
  EXPECT_EQ(m.num_cached(), 2);  // unreferenced but still cached
  found = m.AcquirePrefix(hashes);
  EXPECT_EQ(found.size(), 2u);
  // A miss in the middle stops the match: block k is only valid after blocks 0..k-1.
  const std::vector<uint64_t> gap = {999, 200};
  EXPECT_TRUE(m.AcquirePrefix(gap).empty());
}

TEST(KvBlockManagerTest, EvictsLeastRecentlyReleasedCachedBlockFirst) {
  KvBlockManager m(3, 16, true);
  const int32_t a = *m.Allocate(), b = *m.Allocate(), c = *m.Allocate();
  m.RegisterFull(a, 1, kRoot);
  m.RegisterFull(b, 2, kRoot);
  m.Release(b);  // released first: evicted first
  m.Release(a);
  m.Release(c);  // not cached: goes to the free list, used before any eviction
  EXPECT_EQ(*m.Allocate(), c);
  EXPECT_EQ(*m.Allocate(), b);
  EXPECT_EQ(m.num_cached(), 1);
  const std::vector<uint64_t> h2 = {2};
  EXPECT_TRUE(m.AcquirePrefix(h2).empty());  // evicted: gone from the cache
  const std::vector<uint64_t> h1 = {1};
  EXPECT_EQ(m.AcquirePrefix(h1), std::vector<int32_t>{a});
  EXPECT_FALSE(m.Allocate().has_value());    // a is referenced again: not evictable
}

TEST(KvBlockManagerTest, DuplicateHashKeepsTheFirstBlock) {
  KvBlockManager m(2, 16, true);
  const int32_t a = *m.Allocate(), b = *m.Allocate();
  m.RegisterFull(a, 7, kRoot);
  m.RegisterFull(b, 7, kRoot);
  m.Release(b);
  EXPECT_EQ(m.num_cached(), 1);
  EXPECT_EQ(m.num_available(), 1);  // b went to the free list
  const std::vector<uint64_t> h = {7};
  EXPECT_EQ(m.AcquirePrefix(h), std::vector<int32_t>{a});
}

TEST(KvBlockManagerTest, DisabledCacheNeverMatches) {
  KvBlockManager m(2, 16, false);
  const int32_t a = *m.Allocate();
  m.RegisterFull(a, 7, kRoot);
  m.Release(a);
  const std::vector<uint64_t> h = {7};
  EXPECT_TRUE(m.AcquirePrefix(h).empty());
  EXPECT_EQ(m.num_cached(), 0);
}

TEST(BlockHashTest, AdaptersRootTheirOwnChains) {
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const uint64_t base = PrefixBlockHashes(a, 4, 1)[0];
  const uint64_t dpo = PrefixBlockHashes(a, 4, 1, common::PrefixHashRoot("dpo"))[0];
  const uint64_t sft = PrefixBlockHashes(a, 4, 1, common::PrefixHashRoot("sft"))[0];
  EXPECT_EQ(common::PrefixHashRoot(""), common::kPrefixHashRoot);
  EXPECT_NE(base, dpo);
  EXPECT_NE(dpo, sft);
  EXPECT_EQ(dpo, PrefixBlockHashes(a, 4, 1, common::PrefixHashRoot("dpo"))[0]);
}

// An unloaded adapter's blocks leave the cache: idle ones become free, one still held stays
// with its holder (and is freed, not cached, on release); other chains are untouched.
TEST(KvBlockManagerTest, ForgetChainDropsOnlyThatRootsBlocks) {
  KvBlockManager m(4, 16, true);
  const uint64_t dpo = common::PrefixHashRoot("dpo");
  const int32_t a = *m.Allocate(), b = *m.Allocate(), c = *m.Allocate();
  m.RegisterFull(a, 1, dpo);
  m.RegisterFull(b, 2, dpo);
  m.RegisterFull(c, 3, kRoot);
  m.Release(a);
  m.Release(c);
  EXPECT_EQ(m.ForgetChain(dpo), 2);
  EXPECT_EQ(m.num_cached(), 1);
  const std::vector<uint64_t> h1 = {1}, h2 = {2}, h3 = {3};
  EXPECT_TRUE(m.AcquirePrefix(h1).empty());
  EXPECT_TRUE(m.AcquirePrefix(h2).empty());
  EXPECT_EQ(m.refcount(b), 1);  // still its holder's
  m.Release(b);
  EXPECT_EQ(m.num_cached(), 1);
  EXPECT_EQ(m.num_available(), 4);
  EXPECT_EQ(m.AcquirePrefix(h3), std::vector<int32_t>{c});
  EXPECT_EQ(m.ForgetChain(dpo), 0);
  // Every block can still be handed out exactly once (the free list holds no duplicates).
  std::set<int32_t> got;
  while (auto x = m.Allocate()) got.insert(*x);
  EXPECT_EQ(got.size(), 3u);  // c is referenced
}

TEST(KvBlockManagerTest, CachedHashesAreMostRecentFirst) {
  KvBlockManager m(3, 16, true);
  const int32_t a = *m.Allocate(), b = *m.Allocate();
  m.RegisterFull(a, 10, kRoot);
  m.RegisterFull(b, 20, kRoot);
  EXPECT_EQ(m.CachedHashes(10), (std::vector<uint64_t>{20, 10}));
  const std::vector<uint64_t> h = {10};
  m.AcquirePrefix(h);
  EXPECT_EQ(m.CachedHashes(1), (std::vector<uint64_t>{10}));
}

}  // namespace
}  // namespace phi::worker
