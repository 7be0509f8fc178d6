// A ModelRunner for engine tests whose logits are a pure function of the token history,
// read back from its own paged "KV cache". Every step writes (token, position) into the
// blocks of each sequence's table and then reconstructs the whole history from the cache
// through that table, so a wrong block table, a block shared while being written, or a block
// freed too early changes the logits (or fails the step) and the test sees it.
//
// LoRA adapters: with set_adapter_slots(n) (before Engine::Create) it has n slots. A sequence
// of slot k computes under the adapter installed there, whose identity (its name and path: an
// adapter reloaded from elsewhere has other weights) is mixed into every KV cell it writes;
// the logits hash the cells read back, so KV shared across adapters, a wrong slot or an
// adapter replaced under a running sequence changes them. It records every SetAdapter call,
// the slots of every step, and a SetAdapter made during a step.
#ifndef PHI_TESTS_UNIT_WORKER_ENGINE_FAKE_MODEL_RUNNER_H_
#define PHI_TESTS_UNIT_WORKER_ENGINE_FAKE_MODEL_RUNNER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "services/common/prefix_hash.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/lora/lora_adapter.h"

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

  int32_t max_adapter_slots() const override { return static_cast<int32_t>(slots_.size()); }

  absl::Status SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) override {
    if (in_step_.load()) set_adapter_in_step_.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu_);
    set_adapter_calls_.emplace_back(slot, adapter != nullptr ? adapter->name : "");
    if (slot < 1 || slot > static_cast<int32_t>(slots_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("adapter slot ", slot, " is outside [1, ", slots_.size(), "]"));
    }
    if (adapter != nullptr) {
      auto failure = set_adapter_failures_.find(adapter->name);
      if (failure != set_adapter_failures_.end()) return failure->second;
    }
    slots_[slot - 1] = std::move(adapter);
    return absl::OkStatus();
  }

  absl::Status Step(const StepBatch& batch, StepLogits* out) override {
    in_step_.store(true);
    absl::Status st = RunStep(batch, out);
    in_step_.store(false);
    return st;
  }

  // An adapter's identity in the fake KV cells and logits (0: the base model).
  static uint64_t AdapterTag(const lora::LoraAdapter* adapter) {
    if (adapter == nullptr) return 0;
    return common::SplitMix64(common::PrefixHashRoot(adapter->name) ^ common::PrefixHashRoot(adapter->path));
  }

  // The logits the runner gives after `history`, under `adapter` (null: the base model); a
  // pure function: tests compute references with it.
  std::vector<float> LogitsAfter(const std::vector<int32_t>& history,
                                 const lora::LoraAdapter* adapter = nullptr) const {
    const uint64_t tag = AdapterTag(adapter);
    uint64_t h = common::kPrefixHashRoot;
    for (int32_t t : history) h = common::SplitMix64(h ^ static_cast<uint64_t>(t) ^ tag);
    std::vector<float> l(shape_.vocab_size);
    FillLogits(h, l.data());
    return l;
  }

  void set_step_delay_us(int us) { step_delay_us_ = us; }
  void FailNextSteps(int n) { fail_next_steps_.store(n); }
  int64_t tokens_computed() const { return tokens_computed_.load(); }
  int64_t steps() const { return steps_.load(); }
  int32_t max_batch() const { return max_batch_.load(); }

  // LoRA: slots (call before Engine::Create), an injected SetAdapter failure for an adapter
  // name (OK: none), and what was recorded.
  void set_adapter_slots(int32_t n) { slots_.assign(static_cast<size_t>(n), nullptr); }
  void FailSetAdapter(const std::string& name, absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (status.ok()) {
      set_adapter_failures_.erase(name);
    } else {
      set_adapter_failures_[name] = std::move(status);
    }
  }
  // (slot, adapter name; "" for a slot emptied), in call order.
  std::vector<std::pair<int32_t, std::string>> set_adapter_calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return set_adapter_calls_;
  }
  // Each step's SequenceStep::adapter_slot values, in batch order.
  std::vector<std::vector<int32_t>> step_slots() const {
    std::lock_guard<std::mutex> lock(mu_);
    return step_slots_;
  }
  // The adapter's name in `slot` now ("" when empty).
  std::string adapter_in_slot(int32_t slot) const {
    std::lock_guard<std::mutex> lock(mu_);
    const auto& a = slots_.at(static_cast<size_t>(slot - 1));
    return a != nullptr ? a->name : "";
  }
  int set_adapter_calls_during_steps() const { return set_adapter_in_step_.load(); }

 private:
  absl::Status RunStep(const StepBatch& batch, StepLogits* out) {
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
      absl::StatusOr<uint64_t> tag = SlotTag(s.adapter_slot);
      if (!tag.ok()) return tag.status();
      for (int32_t i = 0; i < static_cast<int32_t>(s.tokens.size()); ++i) {
        Cell& c = At(s.block_table, s.start_pos + i);
        c.token = s.tokens[i];
        c.pos = s.start_pos + i;
        c.adapter_tag = *tag;
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
        h = common::SplitMix64(h ^ static_cast<uint64_t>(c.token) ^ c.adapter_tag);
        if (p >= first_pos) {
          const int32_t row = out->first_row[i] + (p - first_pos);
          FillLogits(h, out->data.data() + static_cast<size_t>(row) * shape_.vocab_size);
        }
      }
    }
    if (!slots_.empty()) {
      std::vector<int32_t> slots;
      for (const SequenceStep& s : batch.seqs) slots.push_back(s.adapter_slot);
      std::lock_guard<std::mutex> lock(mu_);
      step_slots_.push_back(std::move(slots));
    }
    steps_.fetch_add(1);
    tokens_computed_.fetch_add(tokens);
    int32_t prev = max_batch_.load();
    while (static_cast<int32_t>(batch.seqs.size()) > prev &&
           !max_batch_.compare_exchange_weak(prev, static_cast<int32_t>(batch.seqs.size()))) {
    }
    return absl::OkStatus();
  }

  struct Cell {
    int32_t token = -1;
    int32_t pos = -1;
    uint64_t adapter_tag = 0;
  };
  absl::StatusOr<uint64_t> SlotTag(int32_t slot) const {
    if (slot == 0) return uint64_t{0};
    std::lock_guard<std::mutex> lock(mu_);
    if (slot < 0 || slot > static_cast<int32_t>(slots_.size()) || slots_[slot - 1] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("adapter slot ", slot, " is empty or outside [1, ",
                                                     slots_.size(), "]"));
    }
    return AdapterTag(slots_[slot - 1].get());
  }
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

  mutable std::mutex mu_;  // the LoRA fields below
  std::vector<std::shared_ptr<const lora::LoraAdapter>> slots_;
  std::map<std::string, absl::Status> set_adapter_failures_;
  std::vector<std::pair<int32_t, std::string>> set_adapter_calls_;
  std::vector<std::vector<int32_t>> step_slots_;
  std::atomic<bool> in_step_{false};
  std::atomic<int> set_adapter_in_step_{0};
};

}  // namespace phi::worker::testing

#endif  // PHI_TESTS_UNIT_WORKER_ENGINE_FAKE_MODEL_RUNNER_H_
