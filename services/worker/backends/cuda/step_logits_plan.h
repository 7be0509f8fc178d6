// How CudaModelRunner::Step turns one forward pass into StepLogits: which sequences come back
// as candidates (their top-candidate records cover what the sampler could keep: the same
// MergeCandidates and CandidatesCover as the CPU path), which keep whole rows, and the
// device-to-host copies that bring those rows next to each other. Pure host code, so CI
// tests it without a GPU.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_STEP_LOGITS_PLAN_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_STEP_LOGITS_PLAN_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "services/worker/engine/model_runner.h"

namespace phi::worker::cuda {

// Where Step's logits rows went, for tests and benchmarks (running totals).
struct CudaLogitsStats {
  uint64_t candidate_rows = 0;  // rows returned as StepLogits::candidates
  uint64_t fallback_rows = 0;   // candidate rows not covered by their candidates, copied whole
  uint64_t full_rows = 0;       // rows copied whole (fallbacks included)
  uint64_t bytes_to_host = 0;   // device-to-host bytes of logits rows and candidate records
};

// Device rows [device_first, device_first + rows) go to host rows [host_first, ...).
struct LogitsRowCopy {
  int32_t device_first = 0;
  int32_t host_first = 0;
  int32_t rows = 0;
};

// record_index[i] >= 0 names sequence i's top-candidate record (-1: none) in each of
// record_ranks x record_slices blocks of `records` (rank r's slice s at block
// r * record_slices + s, blocks of records.size() / (record_ranks * record_slices) bytes;
// records of CandidateRecordBytes(record_stride) bytes). A rank's slices are joined
// into its shard (JoinCandidateSlices), every rank's shard of a sequence is merged
// (MergeCandidates); covered sequences get out->candidates[i] and whole[i] = false. INTERNAL
// for a malformed record.
absl::Status ChooseCandidateRows(const StepBatch& batch, std::span<const int32_t> record_index,
                                 std::span<const char> records, int record_stride, int record_ranks,
                                 int record_slices, StepLogits* out, std::vector<bool>* whole,
                                 CudaLogitsStats* stats);

// Sets out->vocab_size, first_row, num_rows (0 where !whole[i]) and sizes out->data for the
// whole sequences, whose rows sit on the device at device_first_row[i] (device_num_rows[i]
// of them); `copies` fill out->data, one per run of whole sequences adjacent on the device.
void LayOutWholeRows(const std::vector<bool>& whole, std::span<const int32_t> device_first_row,
                     std::span<const int32_t> device_num_rows, int32_t vocab_size, StepLogits* out,
                     std::vector<LogitsRowCopy>* copies, CudaLogitsStats* stats);

// Both, for records taken from whole rows (one rank, one slice) and every row on the device
// at device_first_row (batch order, contiguous).
absl::Status PlanStepLogits(const StepBatch& batch, std::span<const int32_t> device_first_row,
                            std::span<const int32_t> device_num_rows, std::span<const int32_t> record_index,
                            std::span<const char> records, int record_stride, int32_t vocab_size, StepLogits* out,
                            std::vector<LogitsRowCopy>* copies, CudaLogitsStats* stats);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_STEP_LOGITS_PLAN_H_
