#include "services/worker/backends/cuda/step_logits_plan.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "services/worker/backends/cuda/candidate_record.h"
#include "services/worker/backends/cuda/kernels.h"

namespace phi::worker::cuda {

absl::Status ChooseCandidateRows(const StepBatch& batch, std::span<const int32_t> record_index,
                                 std::span<const char> records, int record_stride, int record_ranks,
                                 int record_slices, StepLogits* out, std::vector<bool>* whole,
                                 CudaLogitsStats* stats) {
  const size_t B = batch.seqs.size();
  if (record_index.size() != B) {
    return absl::InternalError(absl::StrCat("candidate records for ", record_index.size(), " sequences, batch has ", B));
  }
  whole->assign(B, true);
  out->candidates.clear();
  if (records.empty()) return absl::OkStatus();
  const size_t record_bytes = CandidateRecordBytes(record_stride);
  const int blocks = record_ranks * record_slices;
  if (record_ranks < 1 || record_slices < 1 || records.size() % (blocks * record_bytes) != 0) {
    return absl::InternalError(absl::StrCat(records.size(), " bytes of candidate records are not ", record_ranks,
                                            " x ", record_slices, " blocks of ", record_bytes, "-byte records"));
  }
  const size_t block = records.size() / blocks;
  out->candidates.assign(B, {});
  stats->bytes_to_host += records.size();
  std::vector<CandidateShard> shards(record_ranks);
  for (size_t i = 0; i < B; ++i) {
    const int32_t rec = record_index[i];
    if (rec < 0) continue;
    const int32_t count = batch.seqs[i].num_candidates;
    if ((static_cast<size_t>(rec) + 1) * record_bytes > block || count <= 0) {
      return absl::InternalError(absl::StrCat("top-candidate record ", rec, " of sequence ", batch.seqs[i].seq_id,
                                              " (batch index ", i, ") is outside the step's ", block,
                                              " record bytes per rank or was not asked for"));
    }
    for (int r = 0; r < record_ranks; ++r) {
      const char* record = records.data() + r * record_slices * block + rec * record_bytes;
      if (!ShardFromSliceRecords(record, block, record_stride, record_slices, count, &shards[r])) {
        return absl::InternalError(absl::StrCat("top-candidate record of sequence ", batch.seqs[i].seq_id,
                                                " (batch index ", i, ") from rank ", r, " is malformed"));
      }
    }
    LogitCandidates c = MergeCandidates(shards, count);
    // Not covered (candidates ending inside a tie at the cut, min-p over a flat row): the
    // row comes back whole, as the CPU path's fallback.
    if (!CandidatesCover(c, batch.seqs[i].sampling, 0)) {
      ++stats->fallback_rows;
      continue;
    }
    out->candidates[i] = std::move(c);
    (*whole)[i] = false;
    ++stats->candidate_rows;
  }
  return absl::OkStatus();
}

void LayOutWholeRows(const std::vector<bool>& whole, std::span<const int32_t> device_first_row,
                     std::span<const int32_t> device_num_rows, int32_t vocab_size, StepLogits* out,
                     std::vector<LogitsRowCopy>* copies, CudaLogitsStats* stats) {
  const size_t B = whole.size();
  out->vocab_size = vocab_size;
  out->first_row.assign(B, 0);
  out->num_rows.assign(B, 0);
  copies->clear();
  int32_t next = 0;
  for (size_t i = 0; i < B;) {
    if (!whole[i]) {
      out->first_row[i] = next;
      ++i;
      continue;
    }
    LogitsRowCopy copy{.device_first = device_first_row[i], .host_first = next, .rows = 0};
    for (; i < B && whole[i] && device_first_row[i] == copy.device_first + copy.rows; ++i) {
      out->first_row[i] = next + copy.rows;
      out->num_rows[i] = device_num_rows[i];
      copy.rows += device_num_rows[i];
    }
    copies->push_back(copy);
    next += copy.rows;
  }
  out->data.resize(static_cast<size_t>(next) * vocab_size);
  stats->full_rows += static_cast<uint64_t>(next);
  stats->bytes_to_host += static_cast<uint64_t>(next) * vocab_size * sizeof(float);
}

absl::Status PlanStepLogits(const StepBatch& batch, std::span<const int32_t> device_first_row,
                            std::span<const int32_t> device_num_rows, std::span<const int32_t> record_index,
                            std::span<const char> records, int record_stride, int32_t vocab_size, StepLogits* out,
                            std::vector<LogitsRowCopy>* copies, CudaLogitsStats* stats) {
  const size_t B = batch.seqs.size();
  if (device_first_row.size() != B || device_num_rows.size() != B) {
    return absl::InternalError(absl::StrCat("logits layout for ", device_first_row.size(), " sequences, batch has ", B));
  }
  std::vector<bool> whole;
  if (absl::Status st = ChooseCandidateRows(batch, record_index, records, record_stride, 1, 1, out, &whole, stats);
      !st.ok()) {
    return st;
  }
  LayOutWholeRows(whole, device_first_row, device_num_rows, vocab_size, out, copies, stats);
  return absl::OkStatus();
}

}  // namespace phi::worker::cuda
