#include "services/worker/backends/cuda/candidate_record.h"

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace phi::worker::cuda {

bool CandidateShardFromRecord(const void* record, int max_count, CandidateShard* shard) {
  const char* p = static_cast<const char*>(record);
  CandidateRecordHeader head;
  std::memcpy(&head, p, sizeof(head));
  if (max_count < 0 || head.valid > static_cast<uint32_t>(max_count)) return false;
  shard->log_sum_exp = head.log_sum_exp;
  shard->truncated = head.truncated != 0;
  shard->ids.resize(head.valid);
  shard->values.resize(head.valid);
  for (uint32_t j = 0; j < head.valid; ++j) {
    CandidateRecordEntry e;
    std::memcpy(&e, p + sizeof(head) + sizeof(e) * j, sizeof(e));
    shard->values[j] = e.value;
    shard->ids[j] = e.id;
    if (e.id < 0) return false;
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
