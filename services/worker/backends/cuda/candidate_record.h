// Reading top_candidates_forward's records (kernels.h) as the engine's candidate types, so the
// CUDA runner hands the engine exactly what the CPU path (SelectCandidates + MergeCandidates)
// would: the same ids, values, exact count, bound and log-sum-exp.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_CANDIDATE_RECORD_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_CANDIDATE_RECORD_H_

#include "services/worker/engine/candidate_record_layout.h"
#include "services/worker/engine/sampler.h"

namespace phi::worker::cuda {

// One record (CandidateRecordBytes(max_count) bytes) as a CandidateShard; false when it
// claims more than max_count entries or an id below 0.
bool CandidateShardFromRecord(const void* record, int max_count, CandidateShard* shard);

// One rank's shard of a row selected in `slices` vocabulary slices (TopCandidatesArgs::slices):
// the row's record in each slice's block (the first at `record`, the next `slice_stride`
// bytes on), joined (JoinCandidateSlices, `count` being what they were selected with); with
// one slice, that record as it is. False when a record is malformed.
bool ShardFromSliceRecords(const char* record, size_t slice_stride, int max_count, int slices, int count,
                           CandidateShard* shard);

// The whole row's candidates from the record of one rank that holds the whole vocabulary:
// MergeCandidates over that one shard, `count` being what the record was selected with.
bool CandidatesFromRecord(const void* record, int max_count, int count, LogitCandidates* out);

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_CANDIDATE_RECORD_H_
