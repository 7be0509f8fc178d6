#include "tests/unit/worker/parallel/toy_sharded_runner.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace phi::worker::parallel::testing {

ToyShardedRunner::ToyShardedRunner(Communicator* comm, ToyConfig config) : comm_(comm), c_(config) {
  shape_.vocab_size = c_.vocab;
  shape_.max_position_embeddings = c_.max_positions;
  shape_.num_hidden_layers = c_.layers;
  shape_.num_attention_heads = c_.heads;
  head_dim_ = c_.hidden / c_.heads;
  shape_.head_dim = head_dim_;
  local_heads_ = c_.heads / comm_->world_size();
  first_head_ = local_heads_ * comm_->rank();
  local_vocab_ = c_.vocab / comm_->world_size();
}

float ToyShardedRunner::W(uint32_t tensor, uint32_t row, uint32_t col) {
  uint64_t x = (uint64_t{tensor} << 40) ^ (uint64_t{row} << 20) ^ col;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (static_cast<float>(x & 0xffffff) / 16777216.0f - 0.5f) * 0.6f;
}

int64_t ToyShardedRunner::KvBlockBytes(int32_t block_size) const {
  return int64_t{2} * c_.layers * local_heads_ * block_size * head_dim_ * sizeof(float);
}

absl::Status ToyShardedRunner::AllocateKvCache(const worker::KvCacheSpec& spec) {
  kv_spec_ = spec;
  kv_.assign(static_cast<size_t>(KvBlockBytes(spec.block_size) / sizeof(float)) * spec.num_blocks, 0.0f);
  return absl::OkStatus();
}

float* ToyShardedRunner::Kv(int layer, int32_t block, int local_head, int slot, bool value) {
  size_t i = (((static_cast<size_t>(block) * c_.layers + layer) * 2 + (value ? 1 : 0)) * local_heads_ + local_head);
  return kv_.data() + (i * kv_spec_.block_size + slot) * head_dim_;
}

absl::Status ToyShardedRunner::Step(const worker::StepBatch& batch, worker::StepLogits* out) {
  // Flatten the step's tokens in batch order; validation is identical on every rank.
  struct Tok {
    size_t seq;
    int32_t id, pos;
  };
  std::vector<Tok> toks;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const auto& seq = batch.seqs[s];
    for (size_t i = 0; i < seq.tokens.size(); ++i) {
      const int32_t pos = seq.start_pos + static_cast<int32_t>(i);
      if (pos >= c_.max_positions) return absl::InvalidArgumentError(absl::StrCat("position ", pos));
      if (static_cast<size_t>(pos / kv_spec_.block_size) >= seq.block_table.size()) {
        return absl::InvalidArgumentError(absl::StrCat("seq ", seq.seq_id, ": block table too short"));
      }
      toks.push_back({s, seq.tokens[i], pos});
    }
  }
  const int H = c_.hidden, D = head_dim_;
  std::vector<float> x(toks.size() * H), partial(toks.size() * H), q(D), k(D), v(D), o(D);
  for (size_t t = 0; t < toks.size(); ++t) {
    for (int j = 0; j < H; ++j) x[t * H + j] = W(1, toks[t].id, j) + 0.01f * W(2, toks[t].pos, j);
  }
  for (int l = 0; l < c_.layers; ++l) {
    std::fill(partial.begin(), partial.end(), 0.0f);
    for (size_t t = 0; t < toks.size(); ++t) {
      const auto& seq = batch.seqs[toks[t].seq];
      const float* xt = &x[t * H];
      for (int lh = 0; lh < local_heads_; ++lh) {
        const uint32_t h = first_head_ + lh;
        for (int d = 0; d < D; ++d) {
          float qs = 0, ks = 0, vs = 0;
          for (int j = 0; j < H; ++j) {
            qs += W(10 + l, h * D + d, j) * xt[j];
            ks += W(40 + l, h * D + d, j) * xt[j];
            vs += W(70 + l, h * D + d, j) * xt[j];
          }
          q[d] = qs, k[d] = ks, v[d] = vs;
        }
        const int32_t p = toks[t].pos;
        std::copy(k.begin(), k.end(), Kv(l, seq.block_table[p / kv_spec_.block_size], lh, p % kv_spec_.block_size, false));
        std::copy(v.begin(), v.end(), Kv(l, seq.block_table[p / kv_spec_.block_size], lh, p % kv_spec_.block_size, true));
        // Causal attention over the cache, through the block table.
        std::vector<float> scores(p + 1);
        float mx = -1e30f;
        for (int32_t j = 0; j <= p; ++j) {
          const float* kj = Kv(l, seq.block_table[j / kv_spec_.block_size], lh, j % kv_spec_.block_size, false);
          float s = 0;
          for (int d = 0; d < D; ++d) s += q[d] * kj[d];
          scores[j] = s / std::sqrt(static_cast<float>(D));
          mx = std::max(mx, scores[j]);
        }
        float sum = 0;
        for (auto& s : scores) sum += (s = std::exp(s - mx));
        std::fill(o.begin(), o.end(), 0.0f);
        for (int32_t j = 0; j <= p; ++j) {
          const float* vj = Kv(l, seq.block_table[j / kv_spec_.block_size], lh, j % kv_spec_.block_size, true);
          for (int d = 0; d < D; ++d) o[d] += scores[j] / sum * vj[d];
        }
        // Row-split output projection: this head's columns only.
        for (int i = 0; i < H; ++i) {
          float acc = 0;
          for (int d = 0; d < D; ++d) acc += W(100 + l, i, h * D + d) * o[d];
          partial[t * H + i] += acc;
        }
      }
    }
    // The layer's one all-reduce.
    if (auto s = comm_->AllReduceSum(partial); !s.ok()) return s;
    ++all_reduce_calls_;
    all_reduce_bytes_ += partial.size() * sizeof(float);
    for (size_t i = 0; i < x.size(); ++i) x[i] += partial[i];
  }
  // Output rows: the last token of each sequence (or all with all_logits).
  out->vocab_size = c_.vocab;
  out->first_row.clear();
  out->num_rows.clear();
  std::vector<size_t> rows;
  size_t t0 = 0;
  for (const auto& seq : batch.seqs) {
    out->first_row.push_back(static_cast<int32_t>(rows.size()));
    const size_t n = seq.all_logits ? seq.tokens.size() : 1;
    out->num_rows.push_back(static_cast<int32_t>(n));
    for (size_t i = seq.tokens.size() - n; i < seq.tokens.size(); ++i) rows.push_back(t0 + i);
    t0 += seq.tokens.size();
  }
  // Vocabulary-split head: each rank computes its slice of every row, then all-gather.
  const int N = comm_->world_size();
  std::vector<float> local(rows.size() * local_vocab_);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int vv = 0; vv < local_vocab_; ++vv) {
      const uint32_t token = comm_->rank() * local_vocab_ + vv;
      float acc = 0;
      for (int j = 0; j < H; ++j) acc += W(200, token, j) * x[rows[r] * H + j];
      local[r * local_vocab_ + vv] = acc;
    }
  }
  std::vector<float> gathered(local.size() * N);
  if (auto s = comm_->AllGather(local.data(), gathered.data(), local.size() * sizeof(float)); !s.ok()) return s;
  out->data.assign(rows.size() * c_.vocab, 0.0f);
  for (int rank = 0; rank < N; ++rank) {
    for (size_t r = 0; r < rows.size(); ++r) {
      std::copy_n(&gathered[(rank * rows.size() + r) * local_vocab_], local_vocab_,
                  &out->data[r * c_.vocab + rank * local_vocab_]);
    }
  }
  return absl::OkStatus();
}

}  // namespace phi::worker::parallel::testing
