// GatherVocabSplitLogits with N ranks as threads over an in-process all-gather: whole rows
// come back exactly, sampled rows as candidates equal to the whole row's top ids, one
// all-gather per step, and rows whose ties straddle the top-k cut fall back to whole rows in a
// second all-gather on every rank.
#include "services/worker/parallel/vocab_gather.h"

#include <barrier>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace phi::worker::parallel {
namespace {

// The all-gather of N threads: each writes its share into a common buffer, then copies all.
struct Shared {
  explicit Shared(int n) : n(n), sync(n) {}
  int n;
  std::barrier<> sync;
  std::vector<char> buf;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(Shared* shared, int rank) : shared_(shared), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return shared_->n; }
  std::string name() const override { return "threads"; }
  absl::Status AllReduceSum(void*, size_t, DataType) override { return absl::UnimplementedError("test"); }
  absl::Status Broadcast(void*, size_t, int) override { return absl::UnimplementedError("test"); }
  absl::Status Barrier() override {
    shared_->sync.arrive_and_wait();
    return absl::OkStatus();
  }
  absl::Status AllGather(const void* in, void* out, size_t bytes) override {
    if (rank_ == 0) shared_->buf.assign(bytes * shared_->n, 0);
    shared_->sync.arrive_and_wait();
    std::memcpy(shared_->buf.data() + rank_ * bytes, in, bytes);
    shared_->sync.arrive_and_wait();
    std::memcpy(out, shared_->buf.data(), bytes * shared_->n);
    shared_->sync.arrive_and_wait();
    return absl::OkStatus();
  }

 private:
  Shared* shared_;
  int rank_;
};

constexpr int32_t kVocab = 96, kLimit = 90;  // ids 90..95 are past the tokenizer

struct RankResult {
  worker::StepLogits logits;
  VocabGatherStats stats;
  absl::Status status;
};

// Runs the gather on `n` threads for `batch` whose rows (in layout order) are `rows`.
std::vector<RankResult> Gather(int n, const worker::StepBatch& batch, const std::vector<std::vector<float>>& rows) {
  Shared shared(n);
  std::vector<RankResult> results(n);
  std::vector<std::thread> threads;
  const int32_t width = kVocab / n;
  for (int rank = 0; rank < n; ++rank) {
    threads.emplace_back([&, rank] {
      ThreadCommunicator comm(&shared, rank);
      worker::StepLogits& out = results[rank].logits;
      int32_t row = 0;
      for (const auto& s : batch.seqs) {
        out.first_row.push_back(row);
        out.num_rows.push_back(s.all_logits ? static_cast<int32_t>(s.tokens.size()) : 1);
        row += out.num_rows.back();
      }
      std::vector<float> local;
      for (const auto& r : rows) local.insert(local.end(), r.begin() + rank * width, r.begin() + (rank + 1) * width);
      results[rank].status = GatherVocabSplitLogits(comm, batch, local.data(), rank * width, width, kVocab, kLimit,
                                                    &out, &results[rank].stats);
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

std::vector<float> RandomRow(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> r(kVocab);
  for (auto& v : r) v = d(rng);
  return r;
}

TEST(VocabGatherTest, WholeRowsAndCandidatesInOneAllGather) {
  const std::vector<int32_t> three = {1, 2, 3}, one = {4};
  worker::StepBatch batch;
  batch.seqs.push_back({.seq_id = 1, .tokens = three, .all_logits = true});                  // rows 0-2 whole
  batch.seqs.push_back({.seq_id = 2, .tokens = one, .num_candidates = 11,                    // row 3 candidates
                        .sampling = {.temperature = 0.8f, .top_k = 10}});
  batch.seqs.push_back({.seq_id = 3, .tokens = one});                                        // row 4 whole
  std::vector<std::vector<float>> rows;
  for (uint64_t r = 0; r < 5; ++r) rows.push_back(RandomRow(r + 1));
  for (int n : {1, 2, 4}) {
    SCOPED_TRACE(n);
    for (const RankResult& res : Gather(n, batch, rows)) {
      ASSERT_TRUE(res.status.ok()) << res.status;
      const worker::StepLogits& out = res.logits;
      EXPECT_EQ(res.stats.gathers, 1u);
      EXPECT_EQ(res.stats.full_rows, 4u);
      EXPECT_EQ(res.stats.candidate_rows, 1u);
      EXPECT_EQ(res.stats.bytes_gathered, static_cast<uint64_t>(n) * (4 * (kVocab / n) * 4 + 16 + 8 * 11));
      ASSERT_EQ(out.num_rows, (std::vector<int32_t>{3, 0, 1}));
      for (int r = 0; r < 3; ++r) {
        EXPECT_EQ(std::vector<float>(out.Row(out.first_row[0] + r).begin(), out.Row(out.first_row[0] + r).end()),
                  rows[r]);
      }
      EXPECT_EQ(std::vector<float>(out.LastRow(2).begin(), out.LastRow(2).end()), rows[4]);
      ASSERT_TRUE(out.HasCandidates(1));
      // The candidates are the row's top ids below the limit, in the sampler's order.
      std::vector<int32_t> ids(kLimit);
      for (int32_t i = 0; i < kLimit; ++i) ids[i] = i;
      std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return rows[3][a] > rows[3][b]; });
      const worker::LogitCandidates& c = out.candidates[1];
      ASSERT_GE(c.ids.size(), 11u);
      EXPECT_EQ(c.exact, 11);
      for (int j = 0; j < 11; ++j) {
        EXPECT_EQ(c.ids[j], ids[j]) << j;
        EXPECT_EQ(c.values[j], rows[3][ids[j]]);
      }
    }
  }
}

TEST(VocabGatherTest, TiesAtTheCutFallBackToTheWholeRowOnEveryRank) {
  // top_k 3 with ten ids tied at the 3rd value, spread over every slice: the sampler keeps all
  // ten, 4 candidates per rank cannot hold them, so the row is gathered whole.
  std::vector<float> row(kVocab, -5.0f);
  row[2] = 4.0f;
  row[50] = 3.0f;
  for (int i = 0; i < 10; ++i) row[5 + i * 8] = 1.0f;
  const std::vector<int32_t> one = {4};
  worker::StepBatch batch;
  batch.seqs.push_back({.seq_id = 7, .tokens = one, .num_candidates = 4,
                        .sampling = {.temperature = 1.0f, .top_k = 3}});
  for (int n : {2, 4}) {
    SCOPED_TRACE(n);
    for (const RankResult& res : Gather(n, batch, {row})) {
      ASSERT_TRUE(res.status.ok()) << res.status;
      EXPECT_EQ(res.stats.gathers, 2u);
      EXPECT_EQ(res.stats.fallback_rows, 1u);
      EXPECT_EQ(res.stats.candidate_rows, 0u);
      ASSERT_FALSE(res.logits.HasCandidates(0));
      EXPECT_EQ(std::vector<float>(res.logits.LastRow(0).begin(), res.logits.LastRow(0).end()), row);
    }
  }
}

}  // namespace
}  // namespace phi::worker::parallel
