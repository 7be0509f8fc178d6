// The compact wire form of what the leader tells its followers each step: the batch the
// ModelRunner runs (sequence ids, new tokens, start positions, block tables, all_logits),
// plus control messages (allocate the KV cache, install a LoRA adapter, heartbeat, shutdown). Followers replay
// every batch on their shard so their paged KV caches stay identical to the leader's
// (same block ids, same positions). Sampling stays on the leader; a sequence that samples
// from candidates (num_candidates > 0) carries the options every rank needs to agree whether
// the gathered candidates suffice (temperature, top_p, top_k, min_p).
//
// Layout (little-endian, no padding): u32 magic "PHIS", u16 version (3), u16 kind, u64 step
// index, then per kind: kAllocateKv: i32 num_blocks, i32 block_size. kSetAdapter: i32 slot,
// u32 name bytes, u32 path bytes, the name, the path (empty path: clear the slot). kStep:
// u32 sequences; per sequence u64 seq_id, i32 start_pos, u8 all_logits, i32 adapter_slot,
// i32 num_candidates, when > 0 f32 temperature, f32 top_p, i32 top_k, f32 min_p, u8 logprobs;
// u32 tokens, u32 blocks, then the tokens (i32) and the block ids (i32). Decode checks every
// length against the buffer.
//
// A rank's answer to kSetAdapter travels back in an all-gather of kRankStatusBytes per rank
// (EncodeRankStatus): i32 status code, u32 message bytes, the message (cut to fit), zeros.
#ifndef PHI_SERVICES_WORKER_PARALLEL_STEP_CODEC_H_
#define PHI_SERVICES_WORKER_PARALLEL_STEP_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/engine/model_runner.h"

namespace phi::worker::parallel {

enum class StepKind : uint16_t {
  kHeartbeat = 1,   // nothing to run; proves the leader is alive
  kAllocateKv = 2,  // ModelRunner::AllocateKvCache(kv)
  kStep = 3,        // ModelRunner::Step(batch)
  kShutdown = 4,    // the leader is draining: followers exit 0
  kSetAdapter = 5,  // ModelRunner::SetAdapter(slot, the adapter read from path; none if empty)
};

const char* StepKindName(StepKind kind);

// A decoded message. batch() returns spans into its vectors: valid while it lives.
struct StepMessage {
  StepKind kind = StepKind::kHeartbeat;
  uint64_t step_index = 0;
  worker::KvCacheSpec kv;
  // kSetAdapter: the slot and the adapter's name and folder (empty path: clear the slot).
  int32_t adapter_slot = 0;
  std::string adapter_name;
  std::string adapter_path;
  struct Seq {
    uint64_t seq_id = 0;
    int32_t start_pos = 0;
    bool all_logits = false;
    int32_t adapter_slot = 0;
    int32_t num_candidates = 0;
    worker::SamplingOptions sampling;  // temperature, top_p, top_k, min_p with num_candidates
    bool logprobs = false;
    std::vector<int32_t> tokens;
    std::vector<int32_t> block_table;
  };
  std::vector<Seq> seqs;

  worker::StepBatch batch() const;
};

std::string EncodeStep(uint64_t step_index, const worker::StepBatch& batch);
std::string EncodeAllocateKv(uint64_t step_index, const worker::KvCacheSpec& kv);
std::string EncodeControl(StepKind kind, uint64_t step_index);  // heartbeat, shutdown
// Empty `path`: clear `slot`.
std::string EncodeSetAdapter(uint64_t step_index, int32_t slot, std::string_view name, std::string_view path);

// DATA_LOSS naming the offset and field when the bytes are not a message of this version.
absl::StatusOr<StepMessage> DecodeStepMessage(std::string_view bytes);

// One rank's status in a fixed-size record for an all-gather; messages longer than fit are cut.
inline constexpr size_t kRankStatusBytes = 1024;
std::string EncodeRankStatus(const absl::Status& status);
// The status a record holds; DATA_LOSS when `record` is not one.
absl::Status DecodeRankStatus(std::string_view record);

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_STEP_CODEC_H_
