#include "services/worker/parallel/step_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"

namespace phi::worker::parallel {
namespace {

constexpr uint32_t kMagic = 0x53494850;  // "PHIS" little-endian
constexpr uint16_t kVersion = 3;
// An upper bound that no real step reaches (tokens per step are a few thousand): a
// corrupt count must not make us allocate gigabytes.
constexpr uint32_t kMaxCount = 1u << 24;
// kSetAdapter's name and path: 128 and 4096 bytes at most (worker.proto), with room to spare.
constexpr uint32_t kMaxStringBytes = 1u << 16;

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64 are little-endian
    out_.append(b, sizeof(T));
  }
  void PutBytes(std::string_view v) { out_.append(v.data(), v.size()); }
  void PutInts(std::span<const int32_t> v) {
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  absl::Status Get(T* v, const char* field) {
    if (in_.size() - pos_ < sizeof(T)) return Short(field, sizeof(T));
    std::memcpy(v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }
  absl::Status GetInts(std::vector<int32_t>* v, uint32_t n, const char* field) {
    const size_t bytes = size_t{n} * sizeof(int32_t);
    if (in_.size() - pos_ < bytes) return Short(field, bytes);
    v->resize(n);
    std::memcpy(v->data(), in_.data() + pos_, bytes);
    pos_ += bytes;
    return absl::OkStatus();
  }
  absl::Status GetBytes(std::string* v, uint32_t n, const char* field) {
    if (in_.size() - pos_ < n) return Short(field, n);
    v->assign(in_.data() + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  size_t pos() const { return pos_; }
  size_t left() const { return in_.size() - pos_; }

 private:
  absl::Status Short(const char* field, size_t need) const {
    return absl::DataLossError(absl::StrCat("step message: ", field, " at offset ", pos_, " needs ", need,
                                            " bytes, ", in_.size() - pos_, " left"));
  }
  std::string_view in_;
  size_t pos_ = 0;
};

void PutHeader(Writer& w, StepKind kind, uint64_t step_index) {
  w.Put<uint32_t>(kMagic);
  w.Put<uint16_t>(kVersion);
  w.Put<uint16_t>(static_cast<uint16_t>(kind));
  w.Put<uint64_t>(step_index);
}

}  // namespace

const char* StepKindName(StepKind kind) {
  switch (kind) {
    case StepKind::kHeartbeat: return "heartbeat";
    case StepKind::kAllocateKv: return "allocate-kv";
    case StepKind::kStep: return "step";
    case StepKind::kShutdown: return "shutdown";
    case StepKind::kSetAdapter: return "set-adapter";
  }
  return "unknown";
}

worker::StepBatch StepMessage::batch() const {
  worker::StepBatch b;
  b.seqs.reserve(seqs.size());
  for (const auto& s : seqs) {
    worker::SequenceStep step;
    step.seq_id = s.seq_id;
    step.tokens = s.tokens;
    step.start_pos = s.start_pos;
    step.block_table = s.block_table;
    step.all_logits = s.all_logits;
    step.adapter_slot = s.adapter_slot;
    step.num_candidates = s.num_candidates;
    step.sampling = s.sampling;
    step.logprobs = s.logprobs;
    b.seqs.push_back(step);
  }
  return b;
}

std::string EncodeStep(uint64_t step_index, const worker::StepBatch& batch) {
  Writer w;
  PutHeader(w, StepKind::kStep, step_index);
  w.Put<uint32_t>(static_cast<uint32_t>(batch.seqs.size()));
  for (const auto& s : batch.seqs) {
    w.Put<uint64_t>(s.seq_id);
    w.Put<int32_t>(s.start_pos);
    w.Put<uint8_t>(s.all_logits ? 1 : 0);
    w.Put<int32_t>(s.adapter_slot);
    w.Put<int32_t>(s.num_candidates);
    if (s.num_candidates > 0) {
      w.Put<float>(s.sampling.temperature);
      w.Put<float>(s.sampling.top_p);
      w.Put<int32_t>(s.sampling.top_k);
      w.Put<float>(s.sampling.min_p);
      w.Put<uint8_t>(s.logprobs ? 1 : 0);
    }
    w.Put<uint32_t>(static_cast<uint32_t>(s.tokens.size()));
    w.Put<uint32_t>(static_cast<uint32_t>(s.block_table.size()));
    w.PutInts(s.tokens);
    w.PutInts(s.block_table);
  }
  return w.Take();
}

std::string EncodeAllocateKv(uint64_t step_index, const worker::KvCacheSpec& kv) {
  Writer w;
  PutHeader(w, StepKind::kAllocateKv, step_index);
  w.Put<int32_t>(kv.num_blocks);
  w.Put<int32_t>(kv.block_size);
  return w.Take();
}

std::string EncodeSetAdapter(uint64_t step_index, int32_t slot, std::string_view name, std::string_view path) {
  Writer w;
  PutHeader(w, StepKind::kSetAdapter, step_index);
  w.Put<int32_t>(slot);
  w.Put<uint32_t>(static_cast<uint32_t>(name.size()));
  w.Put<uint32_t>(static_cast<uint32_t>(path.size()));
  w.PutBytes(name);
  w.PutBytes(path);
  return w.Take();
}

std::string EncodeControl(StepKind kind, uint64_t step_index) {
  Writer w;
  PutHeader(w, kind, step_index);
  return w.Take();
}

absl::StatusOr<StepMessage> DecodeStepMessage(std::string_view bytes) {
  Reader r(bytes);
  uint32_t magic = 0;
  uint16_t version = 0, kind = 0;
  StepMessage m;
  PHI_RETURN_IF_ERROR(r.Get(&magic, "magic"));
  if (magic != kMagic) return absl::DataLossError(absl::StrCat("step message: bad magic 0x", absl::Hex(magic), " at offset 0"));
  PHI_RETURN_IF_ERROR(r.Get(&version, "version"));
  if (version != kVersion) {
    return absl::DataLossError(absl::StrCat("step message: version ", version, " at offset 4, this rank speaks ", kVersion,
                                            " (ranks of one group must run the same build)"));
  }
  PHI_RETURN_IF_ERROR(r.Get(&kind, "kind"));
  PHI_RETURN_IF_ERROR(r.Get(&m.step_index, "step_index"));
  m.kind = static_cast<StepKind>(kind);
  switch (m.kind) {
    case StepKind::kHeartbeat:
    case StepKind::kShutdown:
      break;
    case StepKind::kAllocateKv:
      PHI_RETURN_IF_ERROR(r.Get(&m.kv.num_blocks, "kv.num_blocks"));
      PHI_RETURN_IF_ERROR(r.Get(&m.kv.block_size, "kv.block_size"));
      break;
    case StepKind::kSetAdapter: {
      uint32_t name = 0, path = 0;
      PHI_RETURN_IF_ERROR(r.Get(&m.adapter_slot, "adapter_slot"));
      PHI_RETURN_IF_ERROR(r.Get(&name, "adapter_name"));
      PHI_RETURN_IF_ERROR(r.Get(&path, "adapter_path"));
      if (name > kMaxStringBytes || path > kMaxStringBytes) {
        return absl::DataLossError(absl::StrCat("step message: adapter name of ", name, " bytes and path of ", path,
                                                " bytes (offset ", r.pos(), ")"));
      }
      PHI_RETURN_IF_ERROR(r.GetBytes(&m.adapter_name, name, "adapter_name"));
      PHI_RETURN_IF_ERROR(r.GetBytes(&m.adapter_path, path, "adapter_path"));
      break;
    }
    case StepKind::kStep: {
      uint32_t n = 0;
      PHI_RETURN_IF_ERROR(r.Get(&n, "sequences"));
      if (n > kMaxCount) return absl::DataLossError(absl::StrCat("step message: ", n, " sequences at offset 16"));
      m.seqs.resize(n);
      for (auto& s : m.seqs) {
        uint8_t all_logits = 0;
        uint32_t tokens = 0, blocks = 0;
        PHI_RETURN_IF_ERROR(r.Get(&s.seq_id, "seq_id"));
        PHI_RETURN_IF_ERROR(r.Get(&s.start_pos, "start_pos"));
        PHI_RETURN_IF_ERROR(r.Get(&all_logits, "all_logits"));
        PHI_RETURN_IF_ERROR(r.Get(&s.adapter_slot, "adapter_slot"));
        PHI_RETURN_IF_ERROR(r.Get(&s.num_candidates, "num_candidates"));
        if (s.num_candidates > 0) {
          PHI_RETURN_IF_ERROR(r.Get(&s.sampling.temperature, "sampling.temperature"));
          PHI_RETURN_IF_ERROR(r.Get(&s.sampling.top_p, "sampling.top_p"));
          PHI_RETURN_IF_ERROR(r.Get(&s.sampling.top_k, "sampling.top_k"));
          PHI_RETURN_IF_ERROR(r.Get(&s.sampling.min_p, "sampling.min_p"));
          uint8_t logprobs = 0;
          PHI_RETURN_IF_ERROR(r.Get(&logprobs, "logprobs"));
          s.logprobs = logprobs != 0;
        }
        PHI_RETURN_IF_ERROR(r.Get(&tokens, "tokens"));
        PHI_RETURN_IF_ERROR(r.Get(&blocks, "blocks"));
        if (tokens > kMaxCount || blocks > kMaxCount) {
          return absl::DataLossError(absl::StrCat("step message: sequence ", s.seq_id, " claims ", tokens, " tokens and ",
                                                  blocks, " blocks (offset ", r.pos(), ")"));
        }
        s.all_logits = all_logits != 0;
        PHI_RETURN_IF_ERROR(r.GetInts(&s.tokens, tokens, "tokens"));
        PHI_RETURN_IF_ERROR(r.GetInts(&s.block_table, blocks, "block_table"));
      }
      break;
    }
    default:
      return absl::DataLossError(absl::StrCat("step message: unknown kind ", kind, " at offset 6"));
  }
  if (r.left() != 0) {
    return absl::DataLossError(absl::StrCat("step message: ", r.left(), " trailing bytes at offset ", r.pos()));
  }
  return m;
}

std::string EncodeRankStatus(const absl::Status& status) {
  constexpr size_t kHeader = sizeof(int32_t) + sizeof(uint32_t);
  const std::string_view message =
      std::string_view(status.message().data(), status.message().size()).substr(0, kRankStatusBytes - kHeader);
  Writer w;
  w.Put<int32_t>(static_cast<int32_t>(status.code()));
  w.Put<uint32_t>(static_cast<uint32_t>(message.size()));
  w.PutBytes(message);
  std::string record = w.Take();
  record.resize(kRankStatusBytes, '\0');
  return record;
}

absl::Status DecodeRankStatus(std::string_view record) {
  Reader r(record);
  int32_t code = 0;
  uint32_t size = 0;
  std::string message;
  PHI_RETURN_IF_ERROR(r.Get(&code, "status code"));
  PHI_RETURN_IF_ERROR(r.Get(&size, "status message"));
  if (record.size() != kRankStatusBytes || code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::DataLossError(absl::StrCat("rank status: code ", code, " in a record of ", record.size(), " bytes"));
  }
  PHI_RETURN_IF_ERROR(r.GetBytes(&message, size, "status message"));
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

}  // namespace phi::worker::parallel
