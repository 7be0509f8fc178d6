// PlanStepLogits (what CudaModelRunner::Step does with a forward pass's device rows and
// top-candidate records) on a host stand-in for the device (label unit, no GPU): a mixed batch
// of whole rows, prompt-logprob rows, covered candidate rows and a candidate row whose tie at
// the top-k cut sends it back whole. The engine's view must be what the whole rows give:
// SampleFromCandidates equals SampleToken on the device row bit for bit, kept rows are the
// device rows, adjacent kept sequences share one copy, and the byte count is what left the GPU;
// two ranks' records of vocabulary halves merge as the CPU runner's vocabulary gather does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/worker/cuda/kernels_cpu.h"
#include "services/worker/backends/cuda/step_logits_plan.h"
#include "tests/unit/worker/engine/sampler_candidate_cases.h"

namespace phi::worker::cuda {
namespace {

using candidate_cases::RandomRow;

constexpr int kVocab = 600;
constexpr int kLimit = 593;
constexpr int32_t kEngineMaxCandidates = 64;  // engine.cc kMaxSampleCandidates

struct Seq {
  int rows = 1;
  SamplingOptions sampling;
  bool logprobs = false;
  int32_t top_n = 0;
  bool candidates = false;  // asks for num_candidates (CandidatesNeeded)
};

// What the GPU would hold and send: device rows and (filled by the fixture) the twin's records.
struct Device {
  std::vector<float> rows;  // [total rows, kVocab]
  std::vector<int32_t> first_row, num_rows, record_index;
  std::vector<char> records;
  int stride = 0;
};

Device MakeDevice(const std::vector<Seq>& seqs, const StepBatch& batch) {
  Device d;
  int row = 0, n_rec = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    d.first_row.push_back(row);
    d.num_rows.push_back(seqs[i].rows);
    row += seqs[i].rows;
    d.record_index.push_back(batch.seqs[i].num_candidates > 0 ? n_rec++ : -1);
    d.stride = std::max(d.stride, batch.seqs[i].num_candidates);
  }
  d.rows.resize(static_cast<size_t>(row) * kVocab);
  for (int r = 0; r < row; ++r) {
    const std::vector<float> v = RandomRow(kVocab, 1000 + r, false);
    for (int j = 0; j < kVocab; ++j) d.rows[static_cast<size_t>(r) * kVocab + j] = 0.3f * v[j];
  }
  int records = 0;
  for (const SequenceStep& s : batch.seqs) records += s.num_candidates > 0;
  d.records.resize(records * CandidateRecordBytes(std::max(d.stride, 1)));
  return d;
}

class StepLogitsPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seqs_.resize(7);
    seqs_[0] = {};                                              // whole row (no ask)
    seqs_[1] = {.logprobs = true, .top_n = 3, .candidates = true};  // greedy
    seqs_[2] = {.rows = 4};                                     // prompt logprobs
    seqs_[3] = {.sampling = {.temperature = 0.9f, .top_k = 5, .seed = 4}, .candidates = true};  // tie at the cut
    seqs_[4] = {.sampling = {.temperature = 0.7f, .top_p = 0.9f, .top_k = 40, .seed = 5},
                .logprobs = true,
                .top_n = 20,
                .candidates = true};
    seqs_[5] = {.sampling = {.temperature = 0.7f, .top_k = 40, .repetition_penalty = 1.3f}};  // penalised
    seqs_[6] = {.sampling = {.temperature = 0.5f, .min_p = 0.2f, .seed = 6}, .candidates = true};
    tokens_.assign(7, {1});
    for (size_t i = 0; i < seqs_.size(); ++i) {
      SequenceStep s{.seq_id = 100 + i, .tokens = tokens_[i], .all_logits = seqs_[i].rows > 1};
      if (seqs_[i].candidates) {
        s.num_candidates =
            CandidatesNeeded(seqs_[i].sampling, kLimit, seqs_[i].logprobs, seqs_[i].top_n, kEngineMaxCandidates);
        s.sampling = seqs_[i].sampling;
        s.logprobs = seqs_[i].logprobs;
      }
      batch_.seqs.push_back(s);
    }
    dev_ = MakeDevice(seqs_, batch_);
    // Sequence 3: the 5th and 6th largest tie, so top-5's threshold equals what the 6
    // candidates leave out: not covered. Sequence 6: one peak, so min-p keeps one id.
    float* r3 = Row(3);
    const float top[] = {9.0f, 8.5f, 8.0f, 7.5f, 7.0f, 7.0f};
    for (int j = 0; j < 6; ++j) r3[10 * (j + 1)] = top[j];
    Row(6)[7] = 20.0f;
    const RecordAsks ask = Asks();
    top_candidates_forward_cpu(dev_.rows.data(), kVocab, kVocab, 0, kLimit, ask.rows.data(), ask.counts.data(),
                               ask.lse.data(), static_cast<int>(ask.rows.size()), dev_.stride, dev_.records.data());
  }

  // What the runner asks top_candidates_forward for: each candidate sequence's last row, its
  // count, and whether it needs the log-sum-exp.
  struct RecordAsks {
    std::vector<int32_t> rows, counts, lse;
  };
  RecordAsks Asks() const {
    RecordAsks a;
    for (size_t i = 0; i < seqs_.size(); ++i) {
      if (batch_.seqs[i].num_candidates <= 0) continue;
      a.rows.push_back(dev_.first_row[i] + dev_.num_rows[i] - 1);
      a.counts.push_back(batch_.seqs[i].num_candidates);
      a.lse.push_back(batch_.seqs[i].logprobs ? 1 : 0);
    }
    return a;
  }

  float* Row(size_t seq) {
    return dev_.rows.data() + static_cast<size_t>(dev_.first_row[seq] + dev_.num_rows[seq] - 1) * kVocab;
  }
  std::span<const float> DeviceRow(int r) const {
    return {dev_.rows.data() + static_cast<size_t>(r) * kVocab, static_cast<size_t>(kVocab)};
  }

  absl::Status Plan(std::span<const char> records) {
    return PlanStepLogits(batch_, dev_.first_row, dev_.num_rows, dev_.record_index, records, dev_.stride, kVocab, &out_,
                          &copies_, &stats_);
  }
  // Executes the copies as CopyLogits would.
  void Copy() {
    for (const LogitsRowCopy& c : copies_) {
      std::memcpy(out_.data.data() + static_cast<size_t>(c.host_first) * kVocab,
                  dev_.rows.data() + static_cast<size_t>(c.device_first) * kVocab,
                  static_cast<size_t>(c.rows) * kVocab * sizeof(float));
    }
  }

  std::vector<Seq> seqs_;
  std::vector<std::vector<int32_t>> tokens_;
  StepBatch batch_;
  Device dev_;
  StepLogits out_;
  std::vector<LogitsRowCopy> copies_;
  CudaLogitsStats stats_;
};

TEST_F(StepLogitsPlanTest, EngineSeesWhatTheWholeRowsGive) {
  ASSERT_TRUE(Plan(dev_.records).ok());
  Copy();
  for (size_t i = 0; i < seqs_.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    const Seq& s = seqs_[i];
    if (out_.HasCandidates(i)) {
      ASSERT_GT(batch_.seqs[i].num_candidates, 0);
      const std::span<const float> row = DeviceRow(dev_.first_row[i]);
      for (uint64_t step = 0; step < 4; ++step) {
        const SampleResult want = SampleToken(row, kLimit, s.sampling, step, nullptr, s.logprobs, s.top_n);
        const SampleResult got = SampleFromCandidates(out_.candidates[i], s.sampling, step, s.logprobs, s.top_n);
        EXPECT_EQ(got.token_id, want.token_id) << "step " << step;
        EXPECT_EQ(got.logprob, want.logprob) << "step " << step;
        ASSERT_EQ(got.top.size(), want.top.size());
        for (size_t j = 0; j < want.top.size(); ++j) {
          EXPECT_EQ(got.top[j].token_id, want.top[j].token_id);
          EXPECT_EQ(got.top[j].logprob, want.top[j].logprob);
        }
      }
      continue;
    }
    ASSERT_EQ(out_.num_rows[i], s.rows);
    for (int r = 0; r < s.rows; ++r) {
      const auto got = out_.Row(out_.first_row[i] + r);
      const auto want = DeviceRow(dev_.first_row[i] + r);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), kVocab * sizeof(float)), 0) << "row " << r;
    }
  }
  // 1, 4 and 6 as candidates; 3 back whole (its tie), beside 2's rows in one copy.
  EXPECT_TRUE(out_.HasCandidates(1));
  EXPECT_FALSE(out_.HasCandidates(3));
  EXPECT_TRUE(out_.HasCandidates(4));
  EXPECT_TRUE(out_.HasCandidates(6));
  ASSERT_EQ(copies_.size(), 3u);
  EXPECT_EQ(copies_[0].device_first, 0);
  EXPECT_EQ(copies_[0].rows, 1);
  EXPECT_EQ(copies_[1].device_first, 2);
  EXPECT_EQ(copies_[1].host_first, 1);
  EXPECT_EQ(copies_[1].rows, 5);
  EXPECT_EQ(copies_[2].device_first, 8);
  EXPECT_EQ(copies_[2].host_first, 6);
  EXPECT_EQ(copies_[2].rows, 1);
  EXPECT_EQ(stats_.candidate_rows, 3u);
  EXPECT_EQ(stats_.fallback_rows, 1u);
  EXPECT_EQ(stats_.full_rows, 7u);
  EXPECT_EQ(stats_.bytes_to_host, dev_.records.size() + 7u * kVocab * sizeof(float));
  EXPECT_EQ(out_.data.size(), 7u * kVocab);
}

TEST_F(StepLogitsPlanTest, WithoutRecordsEveryRowIsOneCopy) {
  ASSERT_TRUE(Plan({}).ok());
  Copy();
  EXPECT_TRUE(out_.candidates.empty());
  ASSERT_EQ(copies_.size(), 1u);
  EXPECT_EQ(copies_[0].rows, 10);
  EXPECT_EQ(out_.first_row, dev_.first_row);
  EXPECT_EQ(out_.num_rows, dev_.num_rows);
  EXPECT_EQ(out_.data, dev_.rows);
}

TEST_F(StepLogitsPlanTest, MalformedRecordsAreInternalErrors) {
  std::vector<char> bad = dev_.records;
  const uint32_t too_many = static_cast<uint32_t>(dev_.stride) + 1;
  std::memcpy(bad.data() + 12, &too_many, 4);  // the first record claims more entries than it has
  const absl::Status st = Plan(bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  EXPECT_NE(st.message().find("sequence 101"), std::string::npos) << st;
  const std::vector<char> short_records(dev_.records.begin(), dev_.records.begin() + 8);
  EXPECT_EQ(Plan(short_records).code(), absl::StatusCode::kInternal);
}

// Tensor parallelism: two ranks' records of their vocabulary halves (the twin on each slice,
// rank blocks one after the other as the all-gather leaves them) merge into exactly what the
// CPU runner's vocabulary gather builds (SelectCandidates per slice + MergeCandidates), and the
// same rows fall back.
TEST_F(StepLogitsPlanTest, TwoRankRecordsMergeLikeTheCpuVocabularyGather) {
  constexpr int kWidth = kVocab / 2;
  const RecordAsks ask = Asks();
  const size_t block = dev_.records.size();
  std::vector<char> records(2 * block);
  for (int r = 0; r < 2; ++r) {
    top_candidates_forward_cpu(dev_.rows.data() + r * kWidth, kVocab, kWidth, r * kWidth, kLimit, ask.rows.data(),
                               ask.counts.data(), ask.lse.data(), static_cast<int>(ask.rows.size()), dev_.stride,
                               records.data() + r * block);
  }
  std::vector<bool> whole;
  ASSERT_TRUE(ChooseCandidateRows(batch_, dev_.record_index, records, dev_.stride, 2, 1, &out_, &whole, &stats_).ok());
  EXPECT_EQ(whole, (std::vector<bool>{true, false, true, true, false, true, false}));
  EXPECT_EQ(stats_.bytes_to_host, records.size());
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (whole[i]) continue;
    SCOPED_TRACE("sequence " + std::to_string(i));
    const std::span<const float> row = DeviceRow(dev_.first_row[i]);
    std::vector<CandidateShard> shards;
    for (int r = 0; r < 2; ++r) {
      shards.push_back(SelectCandidates(row.subspan(r * kWidth, kWidth), r * kWidth, kLimit,
                                        batch_.seqs[i].num_candidates, batch_.seqs[i].logprobs));
    }
    const LogitCandidates want = MergeCandidates(shards, batch_.seqs[i].num_candidates);
    const LogitCandidates& got = out_.candidates[i];
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.values, want.values);
    EXPECT_EQ(got.exact, want.exact);
    EXPECT_EQ(got.bound, want.bound);
    EXPECT_EQ(std::memcmp(&got.log_sum_exp, &want.log_sum_exp, 8), 0);
    const Seq& s = seqs_[i];
    for (uint64_t step = 0; step < 4; ++step) {
      EXPECT_EQ(SampleFromCandidates(got, s.sampling, step, false, 0).token_id,
                SampleToken(row, kLimit, s.sampling, step, nullptr, false, 0).token_id);
    }
  }
}

// Rows selected in slices (TopCandidatesArgs::slices: the twin on each slice's columns,
// slice blocks one after the other as top_candidates_forward writes them) give exactly the
// whole-row records' candidates: same ids, values, exact count and bound, the log-sum-exp
// within 1e-12, the same rows covered; the bytes counted are the sliced records'.
TEST_F(StepLogitsPlanTest, SlicedRecordsGiveTheWholeRowCandidates) {
  std::vector<bool> want_whole;
  CudaLogitsStats whole_stats;
  StepLogits want;
  ASSERT_TRUE(ChooseCandidateRows(batch_, dev_.record_index, dev_.records, dev_.stride, 1, 1, &want, &want_whole,
                                  &whole_stats).ok());
  const RecordAsks ask = Asks();
  const size_t block = dev_.records.size();
  for (int slices : {2, 5, 9}) {
    SCOPED_TRACE("slices " + std::to_string(slices));
    const int width = top_candidates_slice_width(kVocab, slices);
    std::vector<char> records(slices * block);
    for (int s = 0; s < slices; ++s) {
      const int c0 = s * width;
      top_candidates_forward_cpu(dev_.rows.data() + c0, kVocab, std::min(width, kVocab - c0), c0, kLimit,
                                 ask.rows.data(), ask.counts.data(), ask.lse.data(), static_cast<int>(ask.rows.size()),
                                 dev_.stride, records.data() + s * block);
    }
    std::vector<bool> whole;
    StepLogits got;
    CudaLogitsStats stats;
    ASSERT_TRUE(ChooseCandidateRows(batch_, dev_.record_index, records, dev_.stride, 1, slices, &got, &whole, &stats)
                    .ok());
    EXPECT_EQ(whole, want_whole);
    EXPECT_EQ(stats.bytes_to_host, records.size());
    EXPECT_EQ(stats.candidate_rows, whole_stats.candidate_rows);
    for (size_t i = 0; i < seqs_.size(); ++i) {
      if (whole[i]) continue;
      SCOPED_TRACE("sequence " + std::to_string(i));
      const LogitCandidates& g = got.candidates[i];
      const LogitCandidates& w = want.candidates[i];
      EXPECT_EQ(g.ids, w.ids);
      EXPECT_EQ(g.values, w.values);
      EXPECT_EQ(g.exact, w.exact);
      EXPECT_EQ(g.bound, w.bound);
      if (std::isinf(w.log_sum_exp)) {
        EXPECT_EQ(g.log_sum_exp, w.log_sum_exp);  // not asked for
      } else {
        EXPECT_NEAR(g.log_sum_exp, w.log_sum_exp, 1e-12 * std::max(1.0, std::abs(w.log_sum_exp)));
      }
    }
  }
  // A block count that does not divide the bytes (4 records) is malformed.
  std::vector<bool> whole;
  StepLogits got;
  CudaLogitsStats stats;
  EXPECT_EQ(ChooseCandidateRows(batch_, dev_.record_index, dev_.records, dev_.stride, 1, 3, &got, &whole, &stats).code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace phi::worker::cuda
