// A small attention model sharded the way the Phi runner is (heads split across ranks,
// one all-reduce per layer, vocabulary-split output gathered with all-gather) with a real
// paged KV cache addressed through the step's block tables. It stands in for a sharded
// backend in the group tests: a follower that misses or misorders a step has different
// KV contents, and the logits of the group stop matching the group of one.
#ifndef PHI_TESTS_UNIT_WORKER_PARALLEL_TOY_SHARDED_RUNNER_H_
#define PHI_TESTS_UNIT_WORKER_PARALLEL_TOY_SHARDED_RUNNER_H_

#include <cstdint>
#include <vector>

#include "services/worker/engine/model_runner.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel::testing {

struct ToyConfig {
  int32_t vocab = 96;
  int32_t hidden = 32;
  int32_t heads = 8;
  int32_t layers = 3;
  int32_t max_positions = 256;
};

class ToyShardedRunner final : public worker::ModelRunner {
 public:
  ToyShardedRunner(Communicator* comm, ToyConfig config);

  const worker::ModelShape& shape() const override { return shape_; }
  absl::Status AllocateKvCache(const worker::KvCacheSpec& spec) override;
  int64_t KvBlockBytes(int32_t block_size) const override;
  absl::Status Step(const worker::StepBatch& batch, worker::StepLogits* out) override;

  uint64_t all_reduce_calls() const { return all_reduce_calls_; }
  uint64_t all_reduce_bytes() const { return all_reduce_bytes_; }

 private:
  // Deterministic weights: a hash of (tensor, row, column), the same on every rank.
  static float W(uint32_t tensor, uint32_t row, uint32_t col);
  float* Kv(int layer, int32_t block, int local_head, int slot, bool value);

  Communicator* comm_;
  ToyConfig c_;
  worker::ModelShape shape_;
  int32_t head_dim_, local_heads_, first_head_, local_vocab_;
  worker::KvCacheSpec kv_spec_;
  std::vector<float> kv_;
  uint64_t all_reduce_calls_ = 0, all_reduce_bytes_ = 0;
};

}  // namespace phi::worker::parallel::testing

#endif  // PHI_TESTS_UNIT_WORKER_PARALLEL_TOY_SHARDED_RUNNER_H_
