// A ModelRunner for engine tests whose logits are a pure function of the token history,
// read back from its own paged "KV cache". Every step writes (token, position) into the
// blocks of each sequence's table and then reconstructs the whole history from the cache
// through that table, so a wrong block table, a block shared while being written, or a block
// freed too early changes the logits (or fails the step) and the test sees it.
#ifndef PHI_TESTS_UNIT_WORKER_ENGINE_FAKE_MODEL_RUNNER_H_
#define PHI_TESTS_UNIT_WORKER_ENGINE_FAKE_MODEL_RUNNER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "services/common/prefix_hash.h"
#include "services/worker/engine/model_runner.h"

namespace phi::worker::testing {

class FakeModelRunner : public ModelRunner {
 public:
  explicit FakeModelRunner(int32_t vocab = 64, int32_t tokenizer_vocab = 60, int32_t context = 512) {
    shape_.vocab_size = vocab;
    shape_.tokenizer_vocab_size = tokenizer_vocab;
    shape_.max_position_embeddings = context;
    shape_.num_hidden_layers = 1;
    shape_.num_attention_heads = 1;
    shape_.head_dim = 1;
  }

  const ModelShape& shape() const override { return shape_; }

  absl::Status AllocateKvCache(const KvCacheSpec& spec) override {
    spec_ = spec;
    cache_.assign(static_cast<size_t>(spec.num_blocks) * spec.block_size, Cell{});
    return absl::OkStatus();
  }

  int64_t KvBlockBytes(int32_t block_size) const override { return 8 * block_size; }

  absl::Status Step(const StepBatch& batch, StepLogits* out) override {
    if (fail_next_steps_.load() > 0) {
      fail_next_steps_.fetch_sub(1);
      return absl::InternalError("injected failure");
    }
    if (const int us = step_delay_us_.load(); us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
    out->vocab_size = shape_.vocab_size;
    out->first_row.clear();
    out->num_rows.clear();
    out->data.clear();
    int32_t rows = 0;
    int32_t tokens = 0;
    for (const SequenceStep& s : batch.seqs) {
      if (s.tokens.empty()) return absl::InvalidArgumentError("empty step");
      const int32_t end = s.start_pos + static_cast<int32_t>(s.tokens.size());
      if (end > shape_.max_position_embeddings) return absl::InvalidArgumentError("position past context");
      const int32_t needed = (end + spec_.block_size - 1) / spec_.block_size;
      if (static_cast<int32_t>(s.block_table.size()) < needed) {
        return absl::InvalidArgumentError(absl::StrCat("block table of seq ", s.seq_id, " too short"));
      }
      for (int32_t i = 0; i < static_cast<int32_t>(s.tokens.size()); ++i) {
        Cell& c = At(s.block_table, s.start_pos + i);
        c.token = s.tokens[i];
        c.pos = s.start_pos + i;
      }
      tokens += static_cast<int32_t>(s.tokens.size());
      const int32_t n_rows = s.all_logits ? static_cast<int32_t>(s.tokens.size()) : 1;
      out->first_row.push_back(rows);
      out->num_rows.push_back(n_rows);
      rows += n_rows;
    }
    out->data.resize(static_cast<size_t>(rows) * shape_.vocab_size);
    for (size_t i = 0; i < batch.seqs.size(); ++i) {
      const SequenceStep& s = batch.seqs[i];
      const int32_t end = s.start_pos + static_cast<int32_t>(s.tokens.size());
      const int32_t first_pos = s.all_logits ? s.start_pos : end - 1;
      // Rolling hash of the history read back from the cache.
      uint64_t h = common::kPrefixHashRoot;
      for (int32_t p = 0; p < end; ++p) {
        const Cell& c = At(s.block_table, p);
        if (c.pos != p) {
          return absl::InternalError(absl::StrCat("seq ", s.seq_id, ": cache cell for position ", p,
                                                  " holds position ", c.pos));
        }
        h = common::SplitMix64(h ^ static_cast<uint64_t>(c.token));
        if (p >= first_pos) {
          const int32_t row = out->first_row[i] + (p - first_pos);
          FillLogits(h, out->data.data() + static_cast<size_t>(row) * shape_.vocab_size);
        }
      }
    }
    steps_.fetch_add(1);
    tokens_computed_.fetch_add(tokens);
    int32_t prev = max_batch_.load();
    while (static_cast<int32_t>(batch.seqs.size()) > prev &&
           !max_batch_.compare_exchange_weak(prev, static_cast<int32_t>(batch.seqs.size()))) {
    }
    return absl::OkStatus();
  }

  // The logits the runner gives after `history` (pure function; tests compute references).
  std::vector<float> LogitsAfter(const std::vector<int32_t>& history) const {
    uint64_t h = common::kPrefixHashRoot;
    for (int32_t t : history) h = common::SplitMix64(h ^ static_cast<uint64_t>(t));
    std::vector<float> l(shape_.vocab_size);
    FillLogits(h, l.data());
    return l;
  }

  void set_step_delay_us(int us) { step_delay_us_ = us; }
  void FailNextSteps(int n) { fail_next_steps_.store(n); }
  int64_t tokens_computed() const { return tokens_computed_.load(); }
  int64_t steps() const { return steps_.load(); }
  int32_t max_batch() const { return max_batch_.load(); }

 private:
  struct Cell {
    int32_t token = -1;
    int32_t pos = -1;
  };
  Cell& At(std::span<const int32_t> table, int32_t pos) {
    return cache_[static_cast<size_t>(table[pos / spec_.block_size]) * spec_.block_size + pos % spec_.block_size];
  }
  const Cell& At(std::span<const int32_t> table, int32_t pos) const {
    return cache_[static_cast<size_t>(table[pos / spec_.block_size]) * spec_.block_size + pos % spec_.block_size];
  }
  void FillLogits(uint64_t h, float* row) const {
    for (int32_t v = 0; v < shape_.vocab_size; ++v) {
      const uint64_t r = common::SplitMix64(h + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(v + 1));
      row[v] = static_cast<float>(static_cast<double>(r >> 11) * (1.0 / 9007199254740992.0) * 8.0 - 4.0);
    }
  }

  ModelShape shape_;
  KvCacheSpec spec_;
  std::vector<Cell> cache_;
  std::atomic<int> step_delay_us_{0};
  std::atomic<int> fail_next_steps_{0};
  std::atomic<int64_t> tokens_computed_{0};
  std::atomic<int64_t> steps_{0};
  std::atomic<int32_t> max_batch_{0};
};

}  // namespace phi::worker::testing

#endif  // PHI_TESTS_UNIT_WORKER_ENGINE_FAKE_MODEL_RUNNER_H_
