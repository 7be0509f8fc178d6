#include "services/worker/backends/cuda/candidate_record.h"

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace phi::worker::cuda {

bool CandidateShardFromRecord(const void* record, int max_count, CandidateShard* shard) {
  const char* p = static_cast<const char*>(record);
  uint32_t truncated = 0, valid = 0;
  std::memcpy(&shard->log_sum_exp, p, 8);
  std::memcpy(&truncated, p + 8, 4);
  std::memcpy(&valid, p + 12, 4);
  if (max_count < 0 || valid > static_cast<uint32_t>(max_count)) return false;
  shard->truncated = truncated != 0;
  shard->ids.resize(valid);
  shard->values.resize(valid);
  for (uint32_t j = 0; j < valid; ++j) {
    std::memcpy(&shard->values[j], p + 16 + 8 * j, 4);
    std::memcpy(&shard->ids[j], p + 20 + 8 * j, 4);
    if (shard->ids[j] < 0) return false;
  }
  return true;
}

bool ShardFromSliceRecords(const char* record, size_t slice_stride, int max_count, int slices, int count,
                           CandidateShard* shard) {
  if (slices == 1) return CandidateShardFromRecord(record, max_count, shard);
  std::vector<CandidateShard> parts(slices);
  for (int s = 0; s < slices; ++s) {
    if (!CandidateShardFromRecord(record + s * slice_stride, max_count, &parts[s])) return false;
  }
  *shard = JoinCandidateSlices(parts, count);
  return true;
}

bool CandidatesFromRecord(const void* record, int max_count, int count, LogitCandidates* out) {
  CandidateShard shard;
  if (!CandidateShardFromRecord(record, max_count, &shard)) return false;
  *out = MergeCandidates(std::span<const CandidateShard>(&shard, 1), count);
  return true;
}

}  // namespace phi::worker::cuda
