#include "services/worker/backends/cpu/phi_cpu_runner.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/backends/cpu/attention.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/backends/cpu/ops.h"
#include "services/worker/model/phi_fused_weights.h"
#include "services/worker/model/shard_spec.h"
#include "services/worker/model/tokenizer_size.h"

namespace phi::worker::cpu {
namespace {

using model::DType;
using model::PhiLayerTensorName;

// Reads tensor `name` ([rows, cols] in the checkpoint) into rows [row0, row0 + rows) and
// columns [col0, col0 + cols) of `dst` (F32 or BF16).
absl::Status ReadIntoPacked(const model::PhiCheckpoint& ck, const std::string& name, PackedMatrix* dst,
                            int64_t row0, int64_t col0, std::vector<uint8_t>* tmp) {
  PHI_ASSIGN_OR_RETURN(auto shape, ck.LocalShape(name));
  const int64_t rows = shape[0], cols = shape[1];
  const DType dt = dst->format() == WeightFormat::kBF16 ? DType::kBF16 : DType::kF32;
  tmp->resize(static_cast<size_t>(rows * cols) * dst->elem_bytes());
  PHI_RETURN_IF_ERROR(ck.ReadInto(name, dt, tmp->data(), rows * cols));
  dst->SetBlock(row0, col0, rows, cols, tmp->data());
  return absl::OkStatus();
}

absl::Status ReadVector(const model::PhiCheckpoint& ck, const std::string& name, std::vector<float>* out,
                        size_t offset = 0) {
  PHI_ASSIGN_OR_RETURN(auto v, ck.ReadF32(name));
  if (out->size() < offset + v.size()) out->resize(offset + v.size());
  std::copy(v.begin(), v.end(), out->begin() + static_cast<std::ptrdiff_t>(offset));
  return absl::OkStatus();
}

template <typename T>
void Grow(std::vector<T>* v, size_t n) {
  if (v->size() < n) v->resize(n);
}

}  // namespace

CpuModelRunner::CpuModelRunner(const CpuRunnerOptions& options) : options_(options) {}
CpuModelRunner::~CpuModelRunner() = default;

absl::StatusOr<std::unique_ptr<CpuModelRunner>> CpuModelRunner::Create(const std::string& model_dir,
                                                                       const CpuRunnerOptions& options) {
  model::ShardSpec shard;
  if (options.comm != nullptr) shard = {options.comm->rank(), options.comm->world_size()};
  PHI_ASSIGN_OR_RETURN(auto ck, model::PhiCheckpoint::Open(model_dir, shard));
  PHI_ASSIGN_OR_RETURN(auto runner, Create(*ck, options));
  PHI_ASSIGN_OR_RETURN(int32_t tok_size, model::LoadTokenizerVocabSize(model_dir));
  if (tok_size > runner->shape_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, "/tokenizer.json has ", tok_size,
                                                   " ids but config.json vocab_size is ", runner->shape_.vocab_size));
  }
  if (tok_size > 0) runner->shape_.tokenizer_vocab_size = tok_size;
  return runner;
}

absl::StatusOr<std::unique_ptr<CpuModelRunner>> CpuModelRunner::Create(const model::PhiCheckpoint& checkpoint,
                                                                       const CpuRunnerOptions& options) {
  const model::ShardSpec& shard = checkpoint.shard();
  const int comm_size = options.comm != nullptr ? options.comm->world_size() : 1;
  const int comm_rank = options.comm != nullptr ? options.comm->rank() : 0;
  if (shard.world_size != comm_size || shard.rank != comm_rank) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint opened for shard ", shard.rank, " of ", shard.world_size,
                                                   " but the runner's communicator is rank ", comm_rank, " of ",
                                                   comm_size));
  }
  if (options.num_threads < 1 || options.num_threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat("num_threads ", options.num_threads, ": allowed [1, 256]"));
  }
  if (options.max_adapter_slots < 0 || options.max_adapter_slots > kMaxAdapterSlots) {
    return absl::InvalidArgumentError(absl::StrCat("max_adapter_slots ", options.max_adapter_slots,
                                                   ": allowed [0, ", kMaxAdapterSlots, "]"));
  }
  std::unique_ptr<CpuModelRunner> r(new CpuModelRunner(options));
  r->slots_.resize(static_cast<size_t>(options.max_adapter_slots) + 1);
  PHI_ASSIGN_OR_RETURN(r->isa_, ResolveKernelPath(options.kernel));
  PHI_RETURN_IF_ERROR(r->Load(checkpoint));
  return r;
}

void CpuModelRunner::SetDimensions(const model::PhiCheckpoint& ck) {
  config_ = ck.config();
  generation_ = ck.generation();
  const auto& c = config_;
  hidden_ = c.hidden_size;
  inter_ = c.intermediate_size;
  const int64_t world = ck.shard().world_size;
  heads_ = c.num_attention_heads / world;  // ValidateShardSpec checked divisibility
  head_dim_ = c.head_dim();
  rot_half_ = c.rotary_dim() / 2;
  attn_ = heads_ * head_dim_;
  fc1_ = inter_ / world;
  vocab_ = c.vocab_size / world;
  vocab0_ = vocab_ * ck.shard().rank;
  n_in_ = 3 * attn_ + fc1_;
  k_out_ = attn_ + fc1_;
  shape_.vocab_size = c.vocab_size;
  shape_.tokenizer_vocab_size = c.vocab_size;
  shape_.max_position_embeddings = c.max_position_embeddings;
  shape_.num_hidden_layers = c.num_hidden_layers;
  shape_.num_attention_heads = c.num_attention_heads;
  shape_.head_dim = static_cast<int32_t>(head_dim_);
}

// `format` is the format matrices are assembled in: F32 for INT8 weights, which are quantized
// once whole, so that each K-block group may span two checkpoint tensors of a fused matrix.
absl::Status CpuModelRunner::LoadLayer(const model::PhiCheckpoint& ck, int l, WeightFormat format,
                                       std::vector<uint8_t>* tmp) {
  const bool int8 = options_.weights == WeightFormat::kInt8;
  Layer& L = layers_[l];
  PHI_RETURN_IF_ERROR(ReadVector(ck, PhiLayerTensorName(l, "input_layernorm.weight"), &L.ln_w));
  PHI_RETURN_IF_ERROR(ReadVector(ck, PhiLayerTensorName(l, "input_layernorm.bias"), &L.ln_b));
  const auto in_parts = model::FusedInParts(l, attn_, fc1_);
  L.w_in = PackedMatrix(format, n_in_, hidden_);
  for (const model::FusedPart& part : in_parts) {
    PHI_RETURN_IF_ERROR(ReadIntoPacked(ck, part.weight, &L.w_in, part.offset, 0, tmp));
  }
  if (int8) L.w_in = PackedMatrix::QuantizeInt8(L.w_in);
  L.b_in.assign(n_in_, 0.0f);
  for (const model::FusedPart& part : in_parts) {
    PHI_RETURN_IF_ERROR(ReadVector(ck, part.bias, &L.b_in, part.offset));
  }
  L.w_out = PackedMatrix(format, hidden_, k_out_);
  for (const model::FusedPart& part : model::FusedOutParts(l, attn_, fc1_)) {
    PHI_RETURN_IF_ERROR(ReadIntoPacked(ck, part.weight, &L.w_out, 0, part.offset, tmp));
  }
  if (int8) L.w_out = PackedMatrix::QuantizeInt8(L.w_out);
  PHI_ASSIGN_OR_RETURN(L.b_out, model::FusedOutBias(ck, l));
  // Row-split GEMM: the partial sums of all ranks add up, so the bias goes in once.
  if (ck.shard().rank != 0) std::fill(L.b_out.begin(), L.b_out.end(), 0.0f);
  return absl::OkStatus();
}

// Rotary tables computed the way transformers' PhiRotaryEmbedding does, in float32:
// inv_freq = 1 / theta^(2i/dim); angle = float(pos) * inv_freq; cos/sin of the float angle.
void CpuModelRunner::BuildRopeTables() {
  const auto& c = config_;
  const int64_t rot = 2 * rot_half_;
  rope_cos_.resize(static_cast<size_t>(c.max_position_embeddings) * rot_half_);
  rope_sin_.resize(rope_cos_.size());
  std::vector<float> inv_freq(rot_half_);
  for (int64_t i = 0; i < rot_half_; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rot);
    const float p = static_cast<float>(std::pow(c.rope_theta, static_cast<double>(exponent)));
    inv_freq[i] = 1.0f / p;
  }
  for (int64_t pos = 0; pos < c.max_position_embeddings; ++pos) {
    for (int64_t i = 0; i < rot_half_; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i];
      rope_cos_[pos * rot_half_ + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      rope_sin_[pos * rot_half_ + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

absl::Status CpuModelRunner::Load(const model::PhiCheckpoint& ck) {
  SetDimensions(ck);
  pool_ = std::make_unique<ThreadPool>(options_.num_threads);
  matmul_ = std::make_unique<MatMul>(isa_, pool_.get());
  const bool int8 = options_.weights == WeightFormat::kInt8;
  const WeightFormat wf = int8 ? WeightFormat::kF32 : options_.weights;
  std::vector<uint8_t> tmp;

  if (wf == WeightFormat::kF32 && !int8) {
    PHI_ASSIGN_OR_RETURN(embed_f32_, ck.ReadF32("model.embed_tokens.weight"));
  } else {
    PHI_ASSIGN_OR_RETURN(embed_bf16_, ck.ReadBf16("model.embed_tokens.weight"));
  }
  layers_.resize(config_.num_hidden_layers);
  for (int l = 0; l < config_.num_hidden_layers; ++l) PHI_RETURN_IF_ERROR(LoadLayer(ck, l, wf, &tmp));
  PHI_RETURN_IF_ERROR(ReadVector(ck, "model.final_layernorm.weight", &final_ln_w_));
  PHI_RETURN_IF_ERROR(ReadVector(ck, "model.final_layernorm.bias", &final_ln_b_));
  const bool int8_head = int8 && options_.quantize_lm_head;
  lm_head_ = PackedMatrix(int8 && !int8_head ? WeightFormat::kBF16 : wf, vocab_, hidden_);
  PHI_RETURN_IF_ERROR(ReadIntoPacked(ck, "lm_head.weight", &lm_head_, 0, 0, &tmp));
  if (int8_head) lm_head_ = PackedMatrix::QuantizeInt8(lm_head_);
  PHI_RETURN_IF_ERROR(ReadVector(ck, "lm_head.bias", &lm_head_b_));
  BuildRopeTables();
  return absl::OkStatus();
}

int64_t CpuModelRunner::weight_bytes_per_step() const {
  int64_t b = static_cast<int64_t>(lm_head_.payload_bytes());
  for (const auto& L : layers_) b += static_cast<int64_t>(L.w_in.payload_bytes() + L.w_out.payload_bytes());
  return b;
}

int64_t CpuModelRunner::weight_memory_bytes() const {
  auto floats = [](const std::vector<float>& v) { return static_cast<int64_t>(v.size() * sizeof(float)); };
  int64_t b = static_cast<int64_t>(lm_head_.memory_bytes()) + floats(lm_head_b_) + floats(final_ln_w_) +
              floats(final_ln_b_);
  b += floats(embed_f32_) + static_cast<int64_t>(embed_bf16_.size() * sizeof(uint16_t));
  for (const auto& L : layers_) {
    b += static_cast<int64_t>(L.w_in.memory_bytes() + L.w_out.memory_bytes());
    b += floats(L.ln_w) + floats(L.ln_b) + floats(L.b_in) + floats(L.b_out);
  }
  return b;
}

std::string CpuModelRunner::kernel_name() const {
  // avx512bf16 multiplies BF16 weights with vdpbf16ps; its F32 and INT8 GEMMs are FMAs.
  const char* op = "-fma-";
  if (isa_ == Isa::kPortable) op = "-";
  if (isa_ == Isa::kAvx512Bf16 && options_.weights == WeightFormat::kBF16) op = "-dpbf16-";
  std::string name = absl::StrCat(std::string(IsaName(isa_)), op, std::string(WeightFormatName(options_.weights)));
  if (options_.weights == WeightFormat::kInt8 && lm_head_.format() != WeightFormat::kInt8) name += "-bf16head";
  return name;
}

absl::Status CpuModelRunner::SetAdapter(int32_t slot, std::shared_ptr<const lora::LoraAdapter> adapter) {
  const int32_t max = options_.max_adapter_slots;
  if (max == 0) {
    return absl::FailedPreconditionError("this CPU runner holds no LoRA adapters (max_adapter_slots 0)");
  }
  if (slot < 1 || slot > max) {
    return absl::InvalidArgumentError(absl::StrCat("adapter slot ", slot, " outside [1, ", max, "]"));
  }
  if (adapter == nullptr) {
    slots_[static_cast<size_t>(slot)].reset();
    return absl::OkStatus();
  }
  const LoraLayerDims dims{.num_layers = config_.num_hidden_layers, .hidden = hidden_, .attn = attn_, .fc1 = fc1_};
  const int32_t world = options_.comm != nullptr ? options_.comm->world_size() : 1;
  if (world == 1) {
    PHI_ASSIGN_OR_RETURN(slots_[static_cast<size_t>(slot)], PackedLoraAdapter::Pack(*adapter, dims));
    return absl::OkStatus();
  }
  // The whole model's shapes first: the slice is cut by them.
  PHI_RETURN_IF_ERROR(PackedLoraAdapter::CheckFits(
      *adapter, {.num_layers = config_.num_hidden_layers, .hidden = hidden_, .attn = hidden_, .fc1 = inter_}));
  const model::ShardSpec shard{options_.comm->rank(), world};
  const std::shared_ptr<const lora::LoraAdapter> slice = lora::SliceForShard(*adapter, config_, shard);
  PHI_ASSIGN_OR_RETURN(slots_[static_cast<size_t>(slot)], PackedLoraAdapter::Pack(*slice, dims));
  return absl::OkStatus();
}

int64_t CpuModelRunner::KvBlockBytes(int32_t block_size) const {
  return 2 * static_cast<int64_t>(config_.num_hidden_layers) * block_size * attn_ * static_cast<int64_t>(sizeof(float));
}

absl::Status CpuModelRunner::AllocateKvCache(const worker::KvCacheSpec& spec) {
  if (spec.num_blocks < 1 || spec.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("KvCacheSpec num_blocks ", spec.num_blocks, " block_size ",
                                                   spec.block_size, ": both must be >= 1"));
  }
  kv_spec_ = spec;
  kv_layer_stride_ = static_cast<int64_t>(spec.num_blocks) * heads_ * spec.block_size * head_dim_;
  kv_ = AlignedAlloc(static_cast<size_t>(2 * config_.num_hidden_layers * kv_layer_stride_) * sizeof(float));
  return absl::OkStatus();
}

float* CpuModelRunner::KeyAt(int layer, int32_t block, int head) const {
  float* base = reinterpret_cast<float*>(kv_.get()) + static_cast<int64_t>(2 * layer) * kv_layer_stride_;
  return base + (static_cast<int64_t>(block) * heads_ + head) * kv_spec_.block_size * head_dim_;
}

float* CpuModelRunner::ValueAt(int layer, int32_t block, int head) const {
  return KeyAt(layer, block, head) + kv_layer_stride_;
}

absl::Status CpuModelRunner::Validate(const worker::StepBatch& batch) const {
  if (kv_ == nullptr) return absl::FailedPreconditionError("Step before AllocateKvCache");
  if (batch.seqs.empty()) return absl::InvalidArgumentError("empty batch");
  for (const auto& s : batch.seqs) {
    if (s.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": no tokens"));
    if (s.adapter_slot < 0 || s.adapter_slot > options_.max_adapter_slots) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": adapter_slot ", s.adapter_slot,
                                                     " outside [0, ", options_.max_adapter_slots, "]"));
    }
    if (s.adapter_slot > 0 && slots_[static_cast<size_t>(s.adapter_slot)] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s.seq_id, ": adapter_slot ", s.adapter_slot, " holds no adapter"));
    }
    if (s.start_pos < 0) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": start_pos ", s.start_pos, " < 0"));
    }
    const int64_t end = static_cast<int64_t>(s.start_pos) + static_cast<int64_t>(s.tokens.size());
    if (end > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": positions up to ", end - 1,
                                                     " exceed the model's context (max_position_embeddings ",
                                                     config_.max_position_embeddings, ")"));
    }
    const int64_t blocks_needed = (end + kv_spec_.block_size - 1) / kv_spec_.block_size;
    if (static_cast<int64_t>(s.block_table.size()) < blocks_needed) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": block_table has ",
                                                     s.block_table.size(), " blocks, positions [0, ", end,
                                                     ") need ", blocks_needed));
    }
    for (int64_t i = 0; i < blocks_needed; ++i) {
      if (s.block_table[i] < 0 || s.block_table[i] >= kv_spec_.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": block_table[", i, "] = ",
                                                       s.block_table[i], " outside [0, ", kv_spec_.num_blocks, ")"));
      }
    }
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      if (s.tokens[i] < 0 || s.tokens[i] >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": token ", i, " = ", s.tokens[i],
                                                       " outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

void CpuModelRunner::Attention(int layer, const worker::StepBatch& batch,
                               const std::vector<int64_t>& seq_first_token) {
  // Work units: (sequence, head, tile of up to kAttentionQueryTile new tokens), claimed
  // dynamically because their costs differ with the context length.
  std::vector<int64_t> unit_end(batch.seqs.size());
  int64_t units = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const int64_t tiles =
        (static_cast<int64_t>(batch.seqs[i].tokens.size()) + kAttentionQueryTile - 1) / kAttentionQueryTile;
    units += tiles * heads_;
    unit_end[i] = units;
  }
  const int64_t bs = kv_spec_.block_size;
  const float scale_div = static_cast<float>(std::sqrt(static_cast<double>(head_dim_)));
  const int64_t max_ctx = config_.max_position_embeddings;
  Grow(&scores_, static_cast<size_t>(pool_->num_threads() * kAttentionQueryTile * max_ctx));
  const int64_t max_blocks = (max_ctx + bs - 1) / bs;
  Grow(&block_ptrs_, static_cast<size_t>(pool_->num_threads() * 2 * max_blocks));
  std::atomic<int64_t> next{0};
  pool_->Run([&](int thread) {
    const float** kp = block_ptrs_.data() + thread * 2 * max_blocks;
    const float** vp = kp + max_blocks;
    size_t si = 0;
    for (int64_t u = next.fetch_add(1); u < units; u = next.fetch_add(1)) {
      while (u >= unit_end[si]) ++si;  // units are claimed in increasing order
      const auto& s = batch.seqs[si];
      const int64_t local = u - (si == 0 ? 0 : unit_end[si - 1]);
      const int head = static_cast<int>(local % heads_);
      const int64_t t0 = (local / heads_) * kAttentionQueryTile;
      const int64_t nq = std::min<int64_t>(kAttentionQueryTile, static_cast<int64_t>(s.tokens.size()) - t0);
      const int64_t end = s.start_pos + t0 + nq;  // keys seen by the tile's last query
      for (int64_t b = 0; b * bs < end; ++b) {
        kp[b] = KeyAt(layer, s.block_table[b], head);
        vp[b] = ValueAt(layer, s.block_table[b], head);
      }
      const int64_t row = seq_first_token[si] + t0;
      AttentionArgs args;
      args.q = y_in_.data() + row * n_in_ + head * head_dim_;
      args.q_stride = n_in_;
      args.nq = nq;
      args.ctx0 = s.start_pos + t0 + 1;
      args.k_blocks = kp;
      args.v_blocks = vp;
      args.block_size = static_cast<int>(bs);
      args.head_dim = static_cast<int>(head_dim_);
      args.scale_div = scale_div;
      args.scores = scores_.data() + thread * kAttentionQueryTile * max_ctx;
      args.out = z_.data() + row * k_out_ + head * head_dim_;
      args.out_stride = k_out_;
      AttendCausal(args, isa_);
    }
  });
}

CpuModelRunner::StepTokens CpuModelRunner::Flatten(const worker::StepBatch& batch) {
  const size_t B = batch.seqs.size();
  StepTokens st;
  st.seq_first.resize(B);
  // Rows by adapter slot, batch order within a slot: each adapter's rows are one block.
  std::vector<size_t> order(B);
  for (size_t i = 0; i < B; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return batch.seqs[a].adapter_slot < batch.seqs[b].adapter_slot;
  });
  int64_t T = 0;
  for (const size_t i : order) {
    const auto& s = batch.seqs[i];
    st.seq_first[i] = T;
    const auto n = static_cast<int64_t>(s.tokens.size());
    if (s.adapter_slot > 0) {
      if (st.adapter_rows.empty() || st.adapter_rows.back().slot != s.adapter_slot) {
        st.adapter_rows.push_back({.slot = s.adapter_slot, .first = T, .count = 0});
      }
      st.adapter_rows.back().count += n;
    }
    T += n;
  }
  st.count = T;
  st.token.resize(T);
  st.pos.resize(T);
  st.seq_of.resize(T);
  for (size_t i = 0; i < B; ++i) {
    const auto& s = batch.seqs[i];
    for (size_t t = 0; t < s.tokens.size(); ++t) {
      st.token[st.seq_first[i] + t] = s.tokens[t];
      st.pos[st.seq_first[i] + t] = s.start_pos + static_cast<int32_t>(t);
      st.seq_of[st.seq_first[i] + t] = &s;
    }
  }
  return st;
}

// Embedding (embd_pdrop is 0 at inference). Split by vocabulary: the rank holding a token's
// row writes it, the others zeros, and the caller's all-reduce assembles the rows.
void CpuModelRunner::Embed(const StepTokens& st) {
  const int64_t H = hidden_;
  for (int64_t t = 0; t < st.count; ++t) {
    float* x = x_.data() + t * H;
    const int64_t row = static_cast<int64_t>(st.token[t]) - vocab0_;
    if (row < 0 || row >= vocab_) {
      std::fill(x, x + H, 0.0f);
    } else if (!embed_f32_.empty()) {
      std::memcpy(x, embed_f32_.data() + row * H, H * sizeof(float));
    } else {
      const uint16_t* e = embed_bf16_.data() + row * H;
      for (int64_t i = 0; i < H; ++i) x[i] = model::Bf16ToF32(e[i]);
    }
  }
}

absl::Status CpuModelRunner::RunLayer(int l, const worker::StepBatch& batch, const StepTokens& st,
                                      parallel::Communicator* comm) {
  const int64_t H = hidden_, T = st.count;
  const int64_t bs = kv_spec_.block_size;
  const Layer& L = layers_[l];
  pool_->ParallelFor(T, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      LayerNorm(x_.data() + t * H, L.ln_w.data(), L.ln_b.data(), config_.layer_norm_eps, H, h_.data() + t * H, isa_);
    }
  });
  matmul_->Run(h_.data(), T, H, L.w_in, L.b_in.data(), y_in_.data(), n_in_, /*accumulate=*/false);
  // LoRA q/k/v/fc1 deltas, one group of GEMMs per adapter over its block of rows.
  for (const AdapterRows& g : st.adapter_rows) {
    slots_[static_cast<size_t>(g.slot)]->AddInDelta(*matmul_, l, h_.data() + g.first * H, g.count,
                                                    y_in_.data() + g.first * n_in_, n_in_, &lora_s_);
  }

  // Rotary on q and k, then K/V into the cache; gelu of fc1 into z's second part.
  pool_->ParallelFor(T, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* q = y_in_.data() + t * n_in_;
      float* k = q + attn_;
      const float* v = q + 2 * attn_;
      const float* cs = rope_cos_.data() + static_cast<int64_t>(st.pos[t]) * rot_half_;
      const float* sn = rope_sin_.data() + static_cast<int64_t>(st.pos[t]) * rot_half_;
      const int32_t block = st.seq_of[t]->block_table[st.pos[t] / bs];
      const int64_t slot = st.pos[t] % bs;
      for (int64_t hd = 0; hd < heads_; ++hd) {
        Rotary(q + hd * head_dim_, cs, sn, static_cast<int>(rot_half_));
        Rotary(k + hd * head_dim_, cs, sn, static_cast<int>(rot_half_));
        float* kt = KeyAt(l, block, static_cast<int>(hd)) + slot;  // K^T: [head_dim][block_size]
        for (int64_t d = 0; d < head_dim_; ++d) kt[d * bs] = k[hd * head_dim_ + d];
        std::memcpy(ValueAt(l, block, static_cast<int>(hd)) + slot * head_dim_, v + hd * head_dim_,
                    head_dim_ * sizeof(float));
      }
      GeluNew(q + 3 * attn_, fc1_, z_.data() + t * k_out_ + attn_, isa_);
    }
  });
  Attention(l, batch, st.seq_first);
  // x += [attn | gelu(fc1)] W_out^T + b_dense + b_fc2  (dense and fc2 in one GEMM).
  // The LoRA dense + fc2 deltas are added after it (under tensor parallelism, this rank's
  // partial sums, into the all-reduce's input).
  float* out = x_.data();
  if (comm != nullptr) {
    Grow(&partial_, T * H);
    out = partial_.data();
  }
  matmul_->Run(z_.data(), T, k_out_, L.w_out, L.b_out.data(), out, H, /*accumulate=*/comm == nullptr);
  for (const AdapterRows& g : st.adapter_rows) {
    slots_[static_cast<size_t>(g.slot)]->AddOutDelta(*matmul_, l, z_.data() + g.first * k_out_, g.count, k_out_,
                                                     out + g.first * H, H, &lora_s_);
  }
  if (comm == nullptr) return absl::OkStatus();
  // This rank's partial sum over its heads and fc1 columns; the layer's one all-reduce.
  PHI_RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(partial_.data(), T * H)));
  for (int64_t i = 0; i < T * H; ++i) x_[i] += partial_[i];
  return absl::OkStatus();
}

// Logits rows: the last token of each sequence, or all its tokens when asked.
absl::Status CpuModelRunner::Logits(const worker::StepBatch& batch, const StepTokens& st,
                                    parallel::Communicator* comm, worker::StepLogits* out) {
  const int64_t H = hidden_;
  const size_t B = batch.seqs.size();
  out->vocab_size = config_.vocab_size;
  out->first_row.assign(B, 0);
  out->num_rows.assign(B, 0);
  std::vector<int64_t> rows;
  for (size_t i = 0; i < B; ++i) {
    const auto& s = batch.seqs[i];
    out->first_row[i] = static_cast<int32_t>(rows.size());
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    if (s.all_logits) {
      for (int64_t t = 0; t < n; ++t) rows.push_back(st.seq_first[i] + t);
    } else {
      rows.push_back(st.seq_first[i] + n - 1);
    }
    out->num_rows[i] = static_cast<int32_t>(rows.size()) - out->first_row[i];
  }
  const int64_t R = static_cast<int64_t>(rows.size());
  pool_->ParallelFor(R, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      LayerNorm(x_.data() + rows[r] * H, final_ln_w_.data(), final_ln_b_.data(), config_.layer_norm_eps, H,
                h_.data() + r * H, isa_);
    }
  });
  out->candidates.clear();
  if (comm == nullptr) {
    out->data.resize(static_cast<size_t>(R) * config_.vocab_size);
    matmul_->Run(h_.data(), R, H, lm_head_, lm_head_b_.data(), out->data.data(), config_.vocab_size, false);
    return absl::OkStatus();
  }
  // Vocabulary-split lm_head: this rank's columns of every row; whole rows or, for rows that
  // only feed the sampler, each rank's top candidates are gathered (one all-gather).
  Grow(&logits_local_, static_cast<size_t>(R * vocab_));
  float* local = logits_local_.data();
  matmul_->Run(h_.data(), R, H, lm_head_, lm_head_b_.data(), local, vocab_, false);
  // Candidates and their log-sum-exp over every row, padding included (engine/sampler.h).
  return parallel::GatherVocabSplitLogits(*comm, batch, local, static_cast<int32_t>(vocab0_),
                                          static_cast<int32_t>(vocab_), config_.vocab_size, config_.vocab_size, out,
                                          &vocab_gather_stats_);
}

absl::Status CpuModelRunner::Step(const worker::StepBatch& batch, worker::StepLogits* out) {
  PHI_RETURN_IF_ERROR(Validate(batch));
  const StepTokens st = Flatten(batch);
  const int64_t T = st.count;
  Grow(&x_, T * hidden_);
  Grow(&h_, T * hidden_);
  Grow(&y_in_, T * n_in_);
  Grow(&z_, T * k_out_);
  Embed(st);
  parallel::Communicator* comm = options_.comm != nullptr && options_.comm->world_size() > 1 ? options_.comm : nullptr;
  if (comm != nullptr) PHI_RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(x_.data(), T * hidden_)));
  for (int l = 0; l < config_.num_hidden_layers; ++l) PHI_RETURN_IF_ERROR(RunLayer(l, batch, st, comm));
  return Logits(batch, st, comm, out);
}

}  // namespace phi::worker::cpu
