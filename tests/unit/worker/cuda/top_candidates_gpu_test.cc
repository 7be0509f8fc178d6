// top_candidates_forward against its CPU twin on seeded rows (label gpu; skips without a GPU):
// ids, values, truncated and entry counts equal exactly, the log-sum-exp within 1e-12
// relative (a double sum in another order); Phi-1.5's 51200 columns, odd widths, ties at the
// cut, -0.0 beside +0.0, vocabulary slices (a rank's id0), rows split into slices of one block
// each (TopCandidatesArgs::slices), N = 1 .. 64 mixed in one launch. Then the engine's sampler
// over the GPU's records (sliced ones merged) against SampleToken over the whole row: the same
// tokens and top ids, logprobs equal to float rounding of that log-sum-exp difference.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include "services/worker/backends/cuda/candidate_record.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/engine/sampler_candidate_cases.h"

namespace phi::worker::cuda {
namespace {

using candidate_cases::Case;
using candidate_cases::Cases;
using candidate_cases::RandomRow;
using testing::DeviceBuffer;

constexpr int32_t kEngineMaxCandidates = 64;  // engine.cc kMaxSampleCandidates

struct Launch {
  int64_t ld = 0;
  int width = 0, id0 = 0, vocab_limit = 0, max_count = 0;
  std::vector<int32_t> rows, counts, want_lse;
  int slices = 1;
};

// Runs the kernel and the twin on `logits`; returns {gpu records, cpu records}. With slices,
// the twin runs once per slice as a rank holding those columns would (slice s's records
// after slice s - 1's).
void RunBoth(const std::vector<float>& logits, const Launch& l, std::vector<char>* gpu, std::vector<char>* cpu) {
  const int n = static_cast<int>(l.rows.size());
  const size_t slice_bytes = n * CandidateRecordBytes(l.max_count);
  const size_t bytes = l.slices * slice_bytes;
  DeviceBuffer<float> dl(logits.size());
  DeviceBuffer<int32_t> drows(n), dcounts(n), dlse(n);
  DeviceBuffer<char> dout(bytes);
  dl.Upload(logits);
  drows.Upload(l.rows);
  dcounts.Upload(l.counts);
  dlse.Upload(l.want_lse);
  dout.Poison();
  TopCandidatesArgs a;
  a.logits = dl.get();
  a.ld = l.ld;
  a.width = l.width;
  a.id0 = l.id0;
  a.vocab_limit = l.vocab_limit;
  a.rows = drows.get();
  a.counts = dcounts.get();
  a.want_lse = dlse.get();
  a.num_rows = n;
  a.max_count = l.max_count;
  a.slices = l.slices;
  a.out = dout.get();
  PHI_ASSERT_CUDA_OK(top_candidates_forward(a, nullptr));
  PHI_ASSERT_CUDART(cudaDeviceSynchronize());
  *gpu = dout.Download();
  cpu->assign(bytes, 0);
  const int sw = top_candidates_slice_width(l.width, l.slices);
  for (int s = 0; s < l.slices; ++s) {
    const int col0 = s * sw, width = std::clamp(l.width - col0, 0, sw);
    top_candidates_forward_cpu(logits.data() + std::min(col0, l.width), l.ld, width, l.id0 + col0, l.vocab_limit,
                               l.rows.data(), l.counts.data(), l.want_lse.data(), n, l.max_count,
                               cpu->data() + s * slice_bytes);
  }
}

// The row's candidates from `slices` blocks of records (RunBoth's layout), as the runner reads
// them: record `rec` of each block joined into the row's shard.
bool MergedCandidates(const std::vector<char>& records, int slices, int rec, int max_count, int count,
                      LogitCandidates* out) {
  CandidateShard shard;
  if (!ShardFromSliceRecords(records.data() + rec * CandidateRecordBytes(max_count), records.size() / slices,
                             max_count, slices, count, &shard)) {
    return false;
  }
  *out = MergeCandidates(std::span<const CandidateShard>(&shard, 1), count);
  return true;
}

void ExpectSameRecords(const std::vector<char>& gpu, const std::vector<char>& cpu, int n, int max_count) {
  const size_t rb = CandidateRecordBytes(max_count);
  ASSERT_EQ(gpu.size(), cpu.size());
  for (int r = 0; r < n; ++r) {
    SCOPED_TRACE("record " + std::to_string(r));
    const char* g = gpu.data() + r * rb;
    const char* c = cpu.data() + r * rb;
    // Header words and every (value, id) entry, unused ones included, byte for byte.
    EXPECT_EQ(std::memcmp(g + 8, c + 8, rb - 8), 0) << "entries or counts differ";
    double lg = 0, lc = 0;
    std::memcpy(&lg, g, 8);
    std::memcpy(&lc, c, 8);
    if (std::isinf(lc)) {
      EXPECT_EQ(lg, lc);
    } else {
      EXPECT_LE(std::abs(lg - lc), 1e-12 * std::max(1.0, std::abs(lc))) << lg << " vs " << lc;
    }
  }
}

TEST(TopCandidatesGpu, MatchesCpuTwin) {
  PHI_REQUIRE_GPU();
  struct Shape {
    int width, ld, id0, vocab_limit, rows;
  };
  const Shape shapes[] = {{51200, 51200, 0, 51200, 5}, {51200, 51200, 0, 50295, 4}, {25600, 25600, 25600, 50295, 3},
                          {600, 600, 0, 593, 6},       {1, 1, 0, 1, 2},             {7, 7, 0, 7, 3},
                          {1025, 1031, 0, 1025, 4},    {4097, 4097, 0, 4000, 3},    {512, 512, 1024, 1000, 2}};
  const int count_cycle[] = {1, 64, 2, 41, 5, 63, 20};
  for (const Shape& s : shapes) {
    for (bool ties : {false, true}) {
      for (int max_count : {1, 41, 64}) {
        SCOPED_TRACE(::testing::Message() << "width " << s.width << " ld " << s.ld << " id0 " << s.id0 << " limit "
                                          << s.vocab_limit << " ties " << ties << " max_count " << max_count);
        std::vector<float> logits =
            RandomRow(static_cast<int>(s.rows * s.ld), s.width * 7 + s.vocab_limit + max_count + ties, ties);
        if (s.width > 3) {
          logits[2] = -0.0f;  // the two zeros are equal: the lower id comes first
          logits[3] = 0.0f;
        }
        Launch l;
        l.ld = s.ld;
        l.width = s.width;
        l.id0 = s.id0;
        l.vocab_limit = s.vocab_limit;
        l.max_count = max_count;
        // Rows gathered in reverse and repeated, mixed counts, the log-sum-exp on every other.
        for (int r = 0; r < 2 * s.rows; ++r) {
          l.rows.push_back(s.rows - 1 - r % s.rows);
          l.counts.push_back(std::min(max_count, count_cycle[r % 7]));
          l.want_lse.push_back(r % 2);
        }
        std::vector<char> gpu, cpu;
        RunBoth(logits, l, &gpu, &cpu);
        ExpectSameRecords(gpu, cpu, static_cast<int>(l.rows.size()), max_count);
      }
    }
  }
}

// Rows split into vocabulary slices (TopCandidatesArgs::slices): each slice's record is the
// twin's for those columns alone; slices past vocab_limit or past the row are empty; merged,
// the slices give the whole row's top candidates and (within 1e-12) its log-sum-exp.
TEST(TopCandidatesGpu, SlicesMatchTheCpuTwinPerSlice) {
  PHI_REQUIRE_GPU();
  struct Shape {
    int width, ld, id0, vocab_limit, rows, slices;
  };
  const Shape shapes[] = {{51200, 51200, 0, 50295, 2, 25}, {600, 600, 0, 593, 3, 7}, {4097, 4097, 0, 4000, 2, 2},
                          {7, 7, 0, 7, 2, 3},             {1, 1, 0, 1, 1, 2},      {512, 512, 1024, 1000, 1, 4},
                          {25600, 25600, 25600, 50295, 2, 12}};
  for (const Shape& s : shapes) {
    for (bool ties : {false, true}) {
      for (int max_count : {1, 41}) {
        SCOPED_TRACE(::testing::Message() << "width " << s.width << " slices " << s.slices << " id0 " << s.id0
                                          << " limit " << s.vocab_limit << " ties " << ties << " max_count "
                                          << max_count);
        std::vector<float> logits = RandomRow(s.rows * s.ld, s.width * 3 + s.slices + max_count + ties, ties);
        Launch l;
        l.ld = s.ld;
        l.width = s.width;
        l.id0 = s.id0;
        l.vocab_limit = s.vocab_limit;
        l.max_count = max_count;
        l.slices = s.slices;
        for (int r = 0; r < s.rows; ++r) {
          l.rows.push_back(s.rows - 1 - r);
          l.counts.push_back(r % 2 ? max_count : std::max(1, max_count / 2));
          l.want_lse.push_back(1);
        }
        std::vector<char> gpu, cpu;
        RunBoth(logits, l, &gpu, &cpu);
        ExpectSameRecords(gpu, cpu, s.slices * s.rows, max_count);
        // Merged, the slices are the whole row: its top `count` in order, its log-sum-exp.
        Launch whole = l;
        whole.slices = 1;
        std::vector<char> whole_gpu, whole_cpu;
        RunBoth(logits, whole, &whole_gpu, &whole_cpu);
        for (int r = 0; r < s.rows; ++r) {
          LogitCandidates merged, one;
          ASSERT_TRUE(MergedCandidates(gpu, s.slices, r, max_count, l.counts[r], &merged));
          ASSERT_TRUE(MergedCandidates(whole_cpu, 1, r, max_count, l.counts[r], &one));
          ASSERT_EQ(merged.exact, one.exact) << "row " << r;
          for (int j = 0; j < one.exact; ++j) {
            EXPECT_EQ(merged.ids[j], one.ids[j]) << "row " << r << " entry " << j;
            EXPECT_EQ(merged.values[j], one.values[j]) << "row " << r << " entry " << j;
          }
          if (std::isinf(one.log_sum_exp)) {
            EXPECT_EQ(merged.log_sum_exp, one.log_sum_exp);
          } else {
            EXPECT_NEAR(merged.log_sum_exp, one.log_sum_exp, 1e-12 * std::max(1.0, std::abs(one.log_sum_exp)));
          }
        }
      }
    }
  }
}

// A row whose top 64 all share one value (many more ids tie at the cut): the lowest ids win.
TEST(TopCandidatesGpu, TiesAtTheCutTakeTheLowestIds) {
  PHI_REQUIRE_GPU();
  std::vector<float> logits = RandomRow(51200, 3, false);
  for (int i = 100; i < 51200; i += 97) logits[i] = 50.0f;
  logits[40000] = 60.0f;
  Launch l;
  l.ld = l.width = l.vocab_limit = 51200;
  l.max_count = 64;
  l.rows = {0, 0};
  l.counts = {64, 1};
  l.want_lse = {1, 0};
  std::vector<char> gpu, cpu;
  RunBoth(logits, l, &gpu, &cpu);
  ExpectSameRecords(gpu, cpu, 2, 64);
  CandidateShard shard;
  ASSERT_TRUE(CandidateShardFromRecord(gpu.data(), 64, &shard));
  ASSERT_EQ(shard.ids.size(), 64u);
  EXPECT_EQ(shard.ids[0], 40000);
  for (int j = 1; j < 64; ++j) EXPECT_EQ(shard.ids[j], 100 + 97 * (j - 1)) << j;
  EXPECT_TRUE(shard.truncated);
}

// The engine's sampler from GPU records (each row in `slices` slices, merged as the runner
// merges them) against SampleToken on the whole row.
void ExpectSamplingFromGpuRecordsEqualsWholeRow(int slices) {
  int compared = 0, logprobs = 0, logprobs_bit_equal = 0, not_covered = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    const bool ties = seed % 3 == 0;
    const int n = seed % 2 == 0 ? 51200 : 601;
    const int32_t vocab_limit = n == 51200 ? 50295 : 594;
    const std::vector<float> row = RandomRow(n, seed, ties);
    for (const Case& c : Cases(seed * 29)) {
      const int32_t count = CandidatesNeeded(c.options, vocab_limit, c.logprobs, c.top_n, kEngineMaxCandidates);
      ASSERT_GT(count, 0);
      Launch l;
      l.ld = l.width = n;
      l.vocab_limit = vocab_limit;
      l.max_count = kEngineMaxCandidates;
      l.rows = {0};
      l.counts = {count};
      l.want_lse = {c.logprobs ? 1 : 0};
      l.slices = slices;
      std::vector<char> gpu, cpu;
      RunBoth(row, l, &gpu, &cpu);
      LogitCandidates cg, cc;
      ASSERT_TRUE(MergedCandidates(gpu, slices, 0, kEngineMaxCandidates, count, &cg));
      ASSERT_TRUE(MergedCandidates(cpu, slices, 0, kEngineMaxCandidates, count, &cc));
      const bool covered = CandidatesCover(cg, c.options, 0);
      ASSERT_EQ(covered, CandidatesCover(cc, c.options, 0));
      if (!covered) {
        ++not_covered;
        continue;
      }
      for (uint64_t step = 0; step < 3; ++step) {
        SCOPED_TRACE(::testing::Message() << "seed " << seed << " T " << c.options.temperature << " top_k "
                                          << c.options.top_k << " top_p " << c.options.top_p << " min_p "
                                          << c.options.min_p << " step " << step);
        const SampleResult want = SampleToken(row, vocab_limit, c.options, step, nullptr, c.logprobs, c.top_n);
        const SampleResult got = SampleFromCandidates(cg, c.options, step, c.logprobs, c.top_n);
        ASSERT_EQ(got.token_id, want.token_id);
        ++compared;
        if (!c.logprobs) continue;
        ++logprobs;
        EXPECT_NEAR(got.logprob, want.logprob, 1e-6);
        logprobs_bit_equal += got.logprob == want.logprob;
        ASSERT_EQ(got.top.size(), want.top.size());
        for (size_t j = 0; j < want.top.size(); ++j) {
          EXPECT_EQ(got.top[j].token_id, want.top[j].token_id) << "top " << j;
          EXPECT_NEAR(got.top[j].logprob, want.top[j].logprob, 1e-6) << "top " << j;
        }
      }
    }
  }
  std::printf("%d slice(s): compared %d tokens, %d logprobs (%d bit-equal to the whole row's), %d rows not covered\n",
              slices, compared, logprobs, logprobs_bit_equal, not_covered);
  EXPECT_GT(compared, 300);
  EXPECT_GT(logprobs, 100);
}

TEST(TopCandidatesGpu, SamplingFromGpuRecordsEqualsWholeRow) {
  PHI_REQUIRE_GPU();
  ExpectSamplingFromGpuRecordsEqualsWholeRow(1);
}

TEST(TopCandidatesGpu, SamplingFromSlicedRecordsEqualsWholeRow) {
  PHI_REQUIRE_GPU();
  ExpectSamplingFromGpuRecordsEqualsWholeRow(5);
}

// Not a benchmark: prints the kernel time at the engine's shapes so the GPU run records it,
// whole rows (one block each) and in the slices top_candidates_slices chooses.
TEST(TopCandidatesGpu, PrintsTimeAtDecodeShapes) {
  PHI_REQUIRE_GPU();
  PHI_SKIP_ON_EMULATOR();
  for (int rows : {1, 8, 32, 256}) {
    for (int count : {1, 41}) {
      std::vector<int> slice_counts = {1};
      const int auto_slices = top_candidates_slices(rows, 51200, count, 1 << 20);
      if (auto_slices > 1) slice_counts.push_back(auto_slices);
      for (int slices : slice_counts) {
        const std::vector<float> logits = RandomRow(rows * 51200, 5, false);
        DeviceBuffer<float> dl(logits.size());
        DeviceBuffer<int32_t> drows(rows), dcounts(rows), dlse(rows);
        DeviceBuffer<char> dout(slices * rows * CandidateRecordBytes(count));
        std::vector<int32_t> idx(rows), counts(rows, count), lse(rows, 1);
        for (int r = 0; r < rows; ++r) idx[r] = r;
        dl.Upload(logits);
        drows.Upload(idx);
        dcounts.Upload(counts);
        dlse.Upload(lse);
        TopCandidatesArgs a;
        a.logits = dl.get();
        a.ld = a.width = a.vocab_limit = 51200;
        a.rows = drows.get();
        a.counts = dcounts.get();
        a.want_lse = dlse.get();
        a.num_rows = rows;
        a.max_count = count;
        a.slices = slices;
        a.out = dout.get();
        PHI_ASSERT_CUDA_OK(top_candidates_forward(a, nullptr));
        PHI_ASSERT_CUDART(cudaDeviceSynchronize());
        cudaEvent_t e0, e1;
        PHI_ASSERT_CUDART(cudaEventCreate(&e0));
        PHI_ASSERT_CUDART(cudaEventCreate(&e1));
        constexpr int kReps = 20;
        PHI_ASSERT_CUDART(cudaEventRecord(e0));
        for (int i = 0; i < kReps; ++i) PHI_ASSERT_CUDA_OK(top_candidates_forward(a, nullptr));
        PHI_ASSERT_CUDART(cudaEventRecord(e1));
        PHI_ASSERT_CUDART(cudaEventSynchronize(e1));
        float ms = 0;
        PHI_ASSERT_CUDART(cudaEventElapsedTime(&ms, e0, e1));
        std::printf("top_candidates_forward: %3d rows x 51200, top %d + log-sum-exp, %2d slice(s): %.1f us\n", rows,
                    count, slices, 1000.0f * ms / kReps);
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
      }
    }
  }
}

}  // namespace
}  // namespace phi::worker::cuda
