// How CudaModelRunner::Step turns one forward pass into StepLogits: which sequences come back
// as candidates (their top-candidate record covers what the sampler could keep, the same
// CandidatesCover verdict as the CPU path), which keep whole rows, and the device-to-host
// copies that bring those rows next to each other. Pure host code, so CI tests it without a GPU.
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

// The forward pass's layout: sequence i's rows start at device row device_first_row[i]
// (device_num_rows[i] of them, batch order, contiguous); record_index[i] >= 0 names its
// top-candidate record in `records` (top_candidates_record_bytes(record_stride) each), -1 none.
// Fills out (vocab_size, first_row, num_rows, candidates; data sized for the whole rows, not
// written) and the copies that fill out->data, one per run of adjacent whole-row sequences.
// INTERNAL for a malformed record.
absl::Status PlanStepLogits(const StepBatch& batch, std::span<const int32_t> device_first_row,
                            std::span<const int32_t> device_num_rows, std::span<const int32_t> record_index,
                            std::span<const char> records, int record_stride, int32_t vocab_size, StepLogits* out,
                            std::vector<LogitsRowCopy>* copies, CudaLogitsStats* stats);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_STEP_LOGITS_PLAN_H_
