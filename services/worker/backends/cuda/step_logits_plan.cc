#include "services/worker/backends/cuda/step_logits_plan.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "services/worker/backends/cuda/candidate_record.h"
#include "services/worker/backends/cuda/kernels.h"

namespace phi::worker::cuda {

absl::Status PlanStepLogits(const StepBatch& batch, std::span<const int32_t> device_first_row,
                            std::span<const int32_t> device_num_rows, std::span<const int32_t> record_index,
                            std::span<const char> records, int record_stride, int32_t vocab_size, StepLogits* out,
                            std::vector<LogitsRowCopy>* copies, CudaLogitsStats* stats) {
  const size_t B = batch.seqs.size();
  if (device_first_row.size() != B || device_num_rows.size() != B || record_index.size() != B) {
    return absl::InternalError(absl::StrCat("logits layout for ", device_first_row.size(), " sequences, batch has ", B));
  }
  out->vocab_size = vocab_size;
  out->first_row.assign(device_first_row.begin(), device_first_row.end());
  out->num_rows.assign(device_num_rows.begin(), device_num_rows.end());
  out->candidates.clear();
  copies->clear();
  // Sequences whose record covers what the sampler could keep lose their row; the others
  // (candidates ending inside a tie at the cut, min-p over a flat row) keep it whole, as the
  // CPU path's fallback does.
  std::vector<bool> whole(B, true);
  if (!records.empty()) {
    out->candidates.assign(B, {});
    const size_t record_bytes = top_candidates_record_bytes(record_stride);
    stats->bytes_to_host += records.size();
    for (size_t i = 0; i < B; ++i) {
      const int32_t rec = record_index[i];
      if (rec < 0) continue;
      if ((static_cast<size_t>(rec) + 1) * record_bytes > records.size() || batch.seqs[i].num_candidates <= 0) {
        return absl::InternalError(absl::StrCat("top-candidate record ", rec, " of sequence ", batch.seqs[i].seq_id,
                                                " (batch index ", i, ") is outside the step's ", records.size(),
                                                " record bytes or was not asked for"));
      }
      LogitCandidates c;
      if (!CandidatesFromRecord(records.data() + rec * record_bytes, record_stride, batch.seqs[i].num_candidates, &c)) {
        return absl::InternalError(absl::StrCat("top-candidate record of sequence ", batch.seqs[i].seq_id,
                                                " (batch index ", i, ") is malformed"));
      }
      if (!CandidatesCover(c, batch.seqs[i].sampling, 0)) {
        ++stats->fallback_rows;
        continue;
      }
      out->candidates[i] = std::move(c);
      whole[i] = false;
      ++stats->candidate_rows;
    }
  }
  // Device rows are contiguous in batch order: each run of sequences kept whole is one copy.
  int32_t next = 0;
  for (size_t i = 0; i < B;) {
    if (!whole[i]) {
      out->first_row[i] = next;
      out->num_rows[i] = 0;
      ++i;
      continue;
    }
    LogitsRowCopy copy{.device_first = device_first_row[i], .host_first = next, .rows = 0};
    for (; i < B && whole[i] && device_first_row[i] == copy.device_first + copy.rows; ++i) {
      out->first_row[i] = next + copy.rows;
      copy.rows += device_num_rows[i];
    }
    copies->push_back(copy);
    next += copy.rows;
  }
  out->data.resize(static_cast<size_t>(next) * vocab_size);
  stats->full_rows += static_cast<uint64_t>(next);
  stats->bytes_to_host += static_cast<uint64_t>(next) * vocab_size * sizeof(float);
  return absl::OkStatus();
}

}  // namespace phi::worker::cuda
