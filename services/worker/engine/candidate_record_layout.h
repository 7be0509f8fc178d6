// The byte layout of a candidate record: one CandidateShard (sampler.h) of at most `count`
// entries as bytes, the form in which a shard leaves the GPU (top_candidates_forward,
// backends/cuda/kernels.h) and travels between tensor-parallel ranks
// (parallel/vocab_gather.cc). A CandidateRecordHeader, then `count` CandidateRecordEntry
// pairs, the first `valid` in use, the rest (0, -1). Both structs compile for the device too
// (nvcc) and are plain data: host code copies them in and out with memcpy.
#ifndef PHI_SERVICES_WORKER_ENGINE_CANDIDATE_RECORD_LAYOUT_H_
#define PHI_SERVICES_WORKER_ENGINE_CANDIDATE_RECORD_LAYOUT_H_

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define PHI_HOST_DEVICE __host__ __device__
#else
#define PHI_HOST_DEVICE
#endif

namespace phi::worker {

struct CandidateRecordHeader {
  double log_sum_exp;  // log Σ exp over the shard's columns; -inf when not asked for
  uint32_t truncated;  // 1: the shard's columns held more than its entries
  uint32_t valid;      // entries in use
};
struct CandidateRecordEntry {
  float value;
  int32_t id;  // -1 past `valid`
};

static_assert(sizeof(CandidateRecordHeader) == 16 && alignof(CandidateRecordHeader) == 8);
static_assert(offsetof(CandidateRecordHeader, truncated) == 8);
static_assert(offsetof(CandidateRecordHeader, valid) == 12);
static_assert(sizeof(CandidateRecordEntry) == 8 && offsetof(CandidateRecordEntry, id) == 4);

// Bytes of one record of `count` entries; a multiple of 8, so records laid end to end keep
// every header's double aligned.
PHI_HOST_DEVICE inline constexpr size_t CandidateRecordBytes(int count) {
  return sizeof(CandidateRecordHeader) + sizeof(CandidateRecordEntry) * static_cast<size_t>(count);
}

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_CANDIDATE_RECORD_LAYOUT_H_
