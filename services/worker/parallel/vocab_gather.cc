#include "services/worker/parallel/vocab_gather.h"

#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/engine/candidate_record_layout.h"

namespace phi::worker::parallel {
namespace {

// One rank's candidate record (engine/candidate_record_layout.h).
size_t RecordBytes(int32_t count) { return worker::CandidateRecordBytes(count); }

void PutRecord(const worker::CandidateShard& s, int32_t count, char* p) {
  const uint32_t valid = static_cast<uint32_t>(s.ids.size());
  const worker::CandidateRecordHeader head{s.log_sum_exp, s.truncated ? 1u : 0u, valid};
  std::memcpy(p, &head, sizeof(head));
  p += sizeof(head);
  for (int32_t j = 0; j < count; ++j, p += sizeof(worker::CandidateRecordEntry)) {
    const bool in = j < static_cast<int32_t>(valid);
    const worker::CandidateRecordEntry e{in ? s.values[j] : 0.0f, in ? s.ids[j] : -1};
    std::memcpy(p, &e, sizeof(e));
  }
}

absl::Status GetRecord(const char* p, int32_t count, int rank, worker::CandidateShard* s) {
  worker::CandidateRecordHeader head;
  std::memcpy(&head, p, sizeof(head));
  if (head.valid > static_cast<uint32_t>(count)) {
    return absl::DataLossError(absl::StrCat("candidate record from rank ", rank, ": ", head.valid,
                                            " entries, at most ", count));
  }
  s->log_sum_exp = head.log_sum_exp;
  s->truncated = head.truncated != 0;
  s->ids.resize(head.valid);
  s->values.resize(head.valid);
  p += sizeof(head);
  for (uint32_t j = 0; j < head.valid; ++j, p += sizeof(worker::CandidateRecordEntry)) {
    worker::CandidateRecordEntry e;
    std::memcpy(&e, p, sizeof(e));
    s->values[j] = e.value;
    s->ids[j] = e.id;
  }
  return absl::OkStatus();
}

// All-gathers the slices of `rows` (indices into `local`) and writes them as full rows at
// out->data rows dst_row, dst_row + 1, ...
absl::Status GatherFullRows(Communicator& comm, const std::vector<int32_t>& rows, const float* local, int32_t width,
                            int32_t vocab_size, int32_t dst_row, worker::StepLogits* out, VocabGatherStats* stats) {
  const int world = comm.world_size();
  const size_t n = rows.size();
  std::vector<float> send(n * width), recv(n * width * world);
  for (size_t r = 0; r < n; ++r) {
    std::memcpy(send.data() + r * width, local + static_cast<size_t>(rows[r]) * width, width * sizeof(float));
  }
  PHI_RETURN_IF_ERROR(comm.AllGather(send.data(), recv.data(), send.size() * sizeof(float)));
  stats->bytes_gathered += recv.size() * sizeof(float);
  ++stats->gathers;
  for (int rank = 0; rank < world; ++rank) {
    for (size_t r = 0; r < n; ++r) {
      std::memcpy(out->data.data() + (dst_row + r) * static_cast<size_t>(vocab_size) + rank * width,
                  recv.data() + (rank * n + r) * width, width * sizeof(float));
    }
  }
  stats->full_rows += n;
  return absl::OkStatus();
}

// Where each part sits in one rank's share of the all-gather: the rows gathered whole first
// (in batch order), then one candidate record per candidate sequence.
struct ShareLayout {
  std::vector<int32_t> full_rows;  // local row indices gathered whole, in order
  std::vector<size_t> record_at;   // byte offset of sequence i's record in a share
  std::vector<bool> is_candidate;
  size_t full_bytes = 0;
  size_t share = 0;
};

ShareLayout PlanShare(const worker::StepBatch& batch, const worker::StepLogits& out, int32_t width) {
  const size_t B = batch.seqs.size();
  ShareLayout l;
  l.record_at.assign(B, 0);
  l.is_candidate.assign(B, false);
  size_t record_bytes = 0;
  for (size_t i = 0; i < B; ++i) {
    const worker::SequenceStep& s = batch.seqs[i];
    if (s.num_candidates > 0 && !s.all_logits && out.num_rows[i] == 1) {
      l.is_candidate[i] = true;
      l.record_at[i] = record_bytes;
      record_bytes += RecordBytes(s.num_candidates);
    } else {
      for (int32_t r = 0; r < out.num_rows[i]; ++r) l.full_rows.push_back(out.first_row[i] + r);
    }
  }
  l.full_bytes = l.full_rows.size() * width * sizeof(float);
  l.share = l.full_bytes + record_bytes;
  return l;
}

// This rank's share: its slices of the whole rows, then its candidate records.
std::vector<char> PackShare(const ShareLayout& l, const worker::StepBatch& batch, const worker::StepLogits& out,
                            const float* local, int32_t id0, int32_t width, int32_t vocab_limit) {
  std::vector<char> send(l.share);
  for (size_t f = 0; f < l.full_rows.size(); ++f) {
    std::memcpy(send.data() + f * width * sizeof(float), local + static_cast<size_t>(l.full_rows[f]) * width,
                width * sizeof(float));
  }
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    if (!l.is_candidate[i]) continue;
    const int32_t count = batch.seqs[i].num_candidates;
    const worker::CandidateShard shard = worker::SelectCandidates(
        std::span<const float>(local + static_cast<size_t>(out.first_row[i]) * width, width), id0, vocab_limit, count,
        batch.seqs[i].logprobs);
    PutRecord(shard, count, send.data() + l.full_bytes + l.record_at[i]);
  }
  return send;
}

// The whole rows of every rank's share, as full-vocabulary rows of out->data.
void UnpackFullRows(const ShareLayout& l, const std::vector<char>& recv, int world, int32_t width,
                    int32_t vocab_size, worker::StepLogits* out) {
  out->vocab_size = vocab_size;
  out->data.assign(l.full_rows.size() * static_cast<size_t>(vocab_size), 0.0f);
  for (int rank = 0; rank < world; ++rank) {
    const char* base = recv.data() + rank * l.share;
    for (size_t f = 0; f < l.full_rows.size(); ++f) {
      std::memcpy(out->data.data() + f * static_cast<size_t>(vocab_size) + rank * width,
                  base + f * width * sizeof(float), width * sizeof(float));
    }
  }
}

}  // namespace

absl::Status GatherVocabSplitLogits(Communicator& comm, const worker::StepBatch& batch, const float* local,
                                    int32_t id0, int32_t width, int32_t vocab_size, int32_t vocab_limit,
                                    worker::StepLogits* out, VocabGatherStats* stats) {
  const size_t B = batch.seqs.size();
  if (out->first_row.size() != B || out->num_rows.size() != B) {
    return absl::InternalError(absl::StrCat("logits layout for ", out->first_row.size(), " sequences, batch has ", B));
  }
  const int world = comm.world_size();
  const ShareLayout l = PlanShare(batch, *out, width);
  std::vector<char> send = PackShare(l, batch, *out, local, id0, width, vocab_limit);
  std::vector<char> recv(l.share * world);
  if (l.share > 0) {
    PHI_RETURN_IF_ERROR(comm.AllGather(send.data(), recv.data(), l.share));
    stats->bytes_gathered += recv.size();
    ++stats->gathers;
  }

  // Full rows first, in batch order; candidate sequences get no row.
  UnpackFullRows(l, recv, world, width, vocab_size, out);
  stats->full_rows += l.full_rows.size();
  out->candidates.assign(B, {});
  std::vector<int32_t> fallback_rows;
  std::vector<size_t> fallback_seqs;
  int32_t next_row = 0;
  for (size_t i = 0; i < B; ++i) {
    if (!l.is_candidate[i]) {
      out->first_row[i] = next_row;
      next_row += out->num_rows[i];
      continue;
    }
    const int32_t count = batch.seqs[i].num_candidates;
    std::vector<worker::CandidateShard> shards(world);
    for (int rank = 0; rank < world; ++rank) {
      PHI_RETURN_IF_ERROR(
          GetRecord(recv.data() + rank * l.share + l.full_bytes + l.record_at[i], count, rank, &shards[rank]));
    }
    worker::LogitCandidates c = worker::MergeCandidates(shards, count);
    // Every rank reaches the same verdict from the same bytes, so all make the fallback gather.
    if (!worker::CandidatesCover(c, batch.seqs[i].sampling, 0)) {
      fallback_rows.push_back(out->first_row[i]);
      fallback_seqs.push_back(i);
      continue;
    }
    out->candidates[i] = std::move(c);
    out->first_row[i] = next_row;
    out->num_rows[i] = 0;
    ++stats->candidate_rows;
  }
  if (!fallback_rows.empty()) {
    out->data.resize(out->data.size() + fallback_rows.size() * static_cast<size_t>(vocab_size));
    PHI_RETURN_IF_ERROR(GatherFullRows(comm, fallback_rows, local, width, vocab_size, next_row, out, stats));
    for (size_t f = 0; f < fallback_seqs.size(); ++f) {
      out->first_row[fallback_seqs[f]] = next_row + static_cast<int32_t>(f);
      out->num_rows[fallback_seqs[f]] = 1;
    }
    stats->fallback_rows += fallback_rows.size();
  }
  return absl::OkStatus();
}

}  // namespace phi::worker::parallel
