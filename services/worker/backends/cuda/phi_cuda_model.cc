#include "services/worker/backends/cuda/phi_cuda_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "services/worker/backends/cuda/phi_cuda_model_internal.h"

namespace phi::worker::cuda {
namespace {

constexpr int kBuckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256};

}  // namespace

int decode_graph_bucket(int batch) {
  for (int b : kBuckets) {
    if (batch <= b) return b;
  }
  return batch;
}

int64_t PhiCudaConfig::ParameterCount() const {
  const int64_t h = hidden_size;
  // Without the zero padding of w1_rows()/w2_cols().
  const int64_t w1 = qkv_width() + intermediate_size;
  const int64_t w2 = num_heads * head_dim + intermediate_size;
  const int64_t per_layer = 2 * h + w1 * (h + 1) + h * w2 + h;
  return 2 * static_cast<int64_t>(local_vocab()) * h + local_vocab() + 2 * h +
         num_layers * per_layer;
}

CudaStatus PhiCudaModel::Create(const PhiCudaConfig& config, const PhiCudaOptions& options,
                                std::unique_ptr<PhiCudaModel>* out) {
  if (config.head_dim != 64) {
    return CudaStatus::Invalid("PhiCudaModel: head_dim must be 64 (kernels are specialised), got " +
                               std::to_string(config.head_dim));
  }
  if (config.rotary_dim % 2 != 0 || config.rotary_dim > config.head_dim) {
    return CudaStatus::Invalid("PhiCudaModel: rotary_dim must be even and <= head_dim, got " +
                               std::to_string(config.rotary_dim));
  }
  if (config.tp_world < 1 || config.tp_rank < 0 || config.tp_rank >= config.tp_world ||
      config.vocab_size % config.tp_world != 0) {
    return CudaStatus::Invalid("PhiCudaModel: tp_rank " + std::to_string(config.tp_rank) +
                               " of tp_world " + std::to_string(config.tp_world) +
                               " (vocab_size " + std::to_string(config.vocab_size) +
                               " must divide by tp_world)");
  }
  if (options.max_seqs <= 0 || options.max_tokens_per_step < options.max_seqs ||
      options.max_logit_rows < options.max_seqs || options.block_size <= 0) {
    return CudaStatus::Invalid(
        "PhiCudaModel: need max_seqs > 0, max_tokens_per_step >= max_seqs, "
        "max_logit_rows >= max_seqs, block_size > 0");
  }
  if (options.gemv_max_m < 0 || options.gemv_max_m > kGemvMaxM) {
    return CudaStatus::Invalid("PhiCudaModel: gemv_max_m must be in [0, " +
                               std::to_string(kGemvMaxM) + "], got " +
                               std::to_string(options.gemv_max_m));
  }
  if (options.max_adapter_slots < 0 || options.max_adapter_rank < 1 ||
      options.max_adapter_rank > kLoraMaxRank) {
    return CudaStatus::Invalid("PhiCudaModel: max_adapter_slots must be >= 0 and max_adapter_rank in [1, " +
                               std::to_string(kLoraMaxRank) + "], got " +
                               std::to_string(options.max_adapter_slots) + " and " +
                               std::to_string(options.max_adapter_rank));
  }
  std::unique_ptr<PhiCudaModel> m(new PhiCudaModel(config, options));
  PHI_CUDA_RETURN_IF_ERROR(m->Init());
  *out = std::move(m);
  return {};
}

CudaStatus PhiCudaModel::Init() {
  PHI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  PHI_CUDA_RETURN_IF_ERROR(GemmLt::Create(32u << 20, &gemm_));
  gemm_->set_small_m_max(options_.gemv_max_m);
  PHI_CUDA_RETURN_IF_ERROR(decode_gemv_prepare_device());  // before any decode graph is captured
  PHI_CUDA_RETURN_IF_ERROR(AllocateWeights());
  PHI_CUDA_RETURN_IF_ERROR(AllocateActivations());
  PHI_CUDA_RETURN_IF_ERROR(AllocateAdapterTable());
  // Records of every rank under tensor parallelism (each rank's are all-gathered).
  const size_t cand_bytes = config_.tp_world * CandidateArea(options_.max_seqs);
  PHI_CUDA_CHECK(cudaMallocHost(&cand_host_, cand_bytes));
  PHI_CUDA_CHECK(cudaMalloc(&cand_dev_, cand_bytes));
  return {};
}

// Weight arena: plan offsets, one allocation, then hand out pointers.
CudaStatus PhiCudaModel::AllocateWeights() {
  const PhiCudaConfig& c = config_;
  const int64_t h = c.hidden_size;
  std::vector<std::pair<void**, size_t>> plan;
  auto add = [&](auto** p, size_t bytes) {
    plan.emplace_back(reinterpret_cast<void**>(p), bytes);
  };
  weights_.layers.resize(c.num_layers);
  add(&weights_.embed, 2 * static_cast<size_t>(c.local_vocab()) * h);
  for (PhiCudaLayer& l : weights_.layers) {
    add(&l.ln_w, 2 * h);
    add(&l.ln_b, 2 * h);
    add(&l.w1, 2 * static_cast<size_t>(c.w1_rows()) * h);
    add(&l.b1, 2 * static_cast<size_t>(c.w1_rows()));
    add(&l.w2, 2 * static_cast<size_t>(h) * c.w2_cols());
    add(&l.b2, 4 * h);
  }
  add(&weights_.final_ln_w, 2 * h);
  add(&weights_.final_ln_b, 2 * h);
  add(&weights_.lm_w, 2 * static_cast<size_t>(c.local_vocab()) * h);
  add(&weights_.lm_b, 4 * static_cast<size_t>(c.local_vocab()));
  size_t total = 0;
  for (auto& [p, bytes] : plan) total = align_up(total + bytes, 256);
  size_t free_b = 0, total_b = 0;
  PHI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (total > free_b) {
    return CudaStatus::Exhausted("PhiCudaModel: weights need " + std::to_string(total) +
                                 " bytes, GPU has " + std::to_string(free_b) + " free of " +
                                 std::to_string(total_b));
  }
  PHI_CUDA_CHECK(cudaMalloc(&weight_arena_, total));
  // Padding rows/columns of w1/b1/w2 stay zero (loaders write only the real ones).
  PHI_CUDA_CHECK(cudaMemset(weight_arena_, 0, total));
  weight_bytes_ = 0;
  size_t o = 0;
  for (auto& [p, bytes] : plan) {
    *p = static_cast<char*>(weight_arena_) + o;
    o = align_up(o + bytes, 256);
    weight_bytes_ += static_cast<int64_t>(bytes);
  }
  return {};
}

// Activations, sized for the options' capacities.
CudaStatus PhiCudaModel::AllocateActivations() {
  const PhiCudaConfig& c = config_;
  const int64_t h = c.hidden_size;
  const size_t t = options_.max_tokens_per_step;
  PHI_CUDA_CHECK(cudaMalloc(&x_, 4 * t * h));
  PHI_CUDA_CHECK(cudaMalloc(&h_, 2 * t * h));
  PHI_CUDA_CHECK(cudaMalloc(&qkvf_, 2 * t * c.w1_rows()));
  PHI_CUDA_CHECK(cudaMalloc(&mid_, 2 * t * c.w2_cols()));
  // mid_'s padding columns are never written; zero, they add nothing through w2.
  PHI_CUDA_CHECK(cudaMemset(mid_, 0, 2 * t * c.w2_cols()));
  PHI_CUDA_CHECK(cudaMalloc(&hf_, 2 * static_cast<size_t>(options_.max_logit_rows) * h));
  PHI_CUDA_CHECK(
      cudaMalloc(&logits_, 4 * static_cast<size_t>(options_.max_logit_rows) * c.vocab_size));
  const int64_t ws = attention_decode_workspace_floats(options_.max_seqs, c.num_heads,
                                                       c.max_positions);
  if (ws > 0) PHI_CUDA_CHECK(cudaMalloc(&attn_ws_, 4 * ws));
  PHI_CUDA_CHECK(cudaMalloc(&attn_counters_, 4 * static_cast<size_t>(options_.max_seqs) * c.num_heads));
  PHI_CUDA_CHECK(cudaMemset(attn_counters_, 0, 4 * static_cast<size_t>(options_.max_seqs) * c.num_heads));
  return {};
}

int64_t PhiCudaModel::kv_block_bytes_for(int block_size) const {
  return static_cast<int64_t>(config_.num_layers) * 2 * config_.num_heads * block_size *
         config_.head_dim * kv_cache_dtype_bytes(options_.kv_dtype);
}

CudaStatus PhiCudaModel::AllocateKvCache(int num_blocks, int block_size) {
  if (kv_arena_ != nullptr) return CudaStatus::Invalid("AllocateKvCache: already allocated");
  if (block_size == 0) block_size = options_.block_size;
  if (num_blocks <= 0 || block_size <= 0) {
    return CudaStatus::Invalid("AllocateKvCache: num_blocks and block_size must be > 0, got " +
                               std::to_string(num_blocks) + ", " + std::to_string(block_size));
  }
  if (options_.kv_dtype == KvCacheDtype::kFp8E4m3 &&
      !(std::isfinite(options_.kv_scale) && options_.kv_scale > 0.0f)) {
    return CudaStatus::Invalid("AllocateKvCache: kv_scale must be finite and > 0 for the fp8 KV "
                               "cache, got " + std::to_string(options_.kv_scale));
  }
  const size_t bytes = static_cast<size_t>(num_blocks + 1) * kv_block_bytes_for(block_size);
  size_t free_b = 0, total_b = 0;
  PHI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (bytes > free_b) {
    return CudaStatus::Exhausted("AllocateKvCache: " + std::to_string(num_blocks) +
                                 " blocks need " + std::to_string(bytes) + " bytes, " +
                                 std::to_string(free_b) + " free");
  }
  options_.block_size = block_size;
  max_blocks_per_seq_ = (config_.max_positions + options_.block_size - 1) / options_.block_size;
  // Step metadata: its block-table section depends on the block size.
  const int max_tiles = options_.max_tokens_per_step / kPrefillTileQ + options_.max_seqs;
  meta_bytes_ = Layout::Make(options_.max_tokens_per_step, options_.max_seqs, max_tiles,
                             options_.max_logit_rows, max_blocks_per_seq_,
                             options_.max_adapter_slots > 0 ? options_.max_seqs : 0)
                    .end;
  PHI_CUDA_CHECK(cudaMallocHost(&meta_host_, meta_bytes_));
  PHI_CUDA_CHECK(cudaMalloc(&meta_dev_, meta_bytes_));
  PHI_CUDA_CHECK(cudaMalloc(&kv_arena_, bytes));
  kv_num_blocks_ = num_blocks;
  return {};
}

CudaStatus PhiCudaModel::Forward(std::span<const PhiSeqInput> seqs, PhiStepOutput* out) {
  PHI_CUDA_RETURN_IF_ERROR(CheckStep(seqs));
  const StepPlan plan = PlanStep(seqs);
  StepPack pack;
  const Layout L = PackStep(seqs, plan, &pack, out);
  PHI_CUDA_CHECK(cudaMemcpyAsync(meta_dev_, meta_host_, L.end, cudaMemcpyHostToDevice, stream_));
  if (plan.graph) {
    PHI_CUDA_RETURN_IF_ERROR(ReplayDecodeGraph(L));
  } else {
    PHI_CUDA_RETURN_IF_ERROR(RunBodyOrFallBack(L, plan.decode, pack.max_ctx, !plan.tp_candidates));
  }
  // Candidates from the finished logits, outside any decode graph (their count varies by step).
  out->candidate_slices = CandidateSlices(pack.n_cand, out->candidate_stride);
  const size_t cand_bytes = (plan.tp_candidates ? config_.tp_world : 1) *
                            out->candidate_slices * pack.n_cand *
                            CandidateRecordBytes(out->candidate_stride);
  if (plan.tp_candidates) {
    PHI_CUDA_RETURN_IF_ERROR(GatherCandidateStep(L, pack.whole_runs, pack.whole_rows, pack.n_cand,
                                                 out->candidate_stride, out->candidate_slices,
                                                 out));
  } else if (pack.n_cand > 0) {
    PHI_CUDA_RETURN_IF_ERROR(SelectCandidates(L, pack.n_cand, *out, cand_bytes));
  }
  PHI_CUDA_RETURN_IF_ERROR(WaitForStep());
  if (pack.n_cand > 0) out->candidate_records.assign(cand_host_, cand_host_ + cand_bytes);
  return {};
}

CudaStatus PhiCudaModel::CheckStep(std::span<const PhiSeqInput> seqs) const {
  const PhiCudaConfig& c = config_;
  if (kv_arena_ == nullptr) return CudaStatus::Invalid("Forward: KV cache not allocated");
  if (c.tp_world > 1 && collectives_ == nullptr) {
    return CudaStatus::Invalid("Forward: tp_world " + std::to_string(c.tp_world) +
                               " needs SetCollectives first");
  }
  if (seqs.empty()) return CudaStatus::Invalid("Forward: empty batch");
  if (static_cast<int>(seqs.size()) > options_.max_seqs) {
    return CudaStatus::Invalid("Forward: " + std::to_string(seqs.size()) +
                               " sequences, max_seqs is " + std::to_string(options_.max_seqs));
  }
  int n_tok = 0, n_rows = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    PHI_CUDA_RETURN_IF_ERROR(CheckSequence(static_cast<int>(i), seqs[i]));
    const int n = static_cast<int>(seqs[i].tokens.size());
    n_tok += n;
    n_rows += seqs[i].all_logits ? n : 1;
  }
  if (n_tok > options_.max_tokens_per_step || n_rows > options_.max_logit_rows) {
    return CudaStatus::Invalid("Forward: " + std::to_string(n_tok) + " tokens / " +
                               std::to_string(n_rows) + " logit rows exceed the step capacity " +
                               std::to_string(options_.max_tokens_per_step) + " / " +
                               std::to_string(options_.max_logit_rows));
  }
  return {};
}

CudaStatus PhiCudaModel::CheckSequence(int i, const PhiSeqInput& s) const {
  const PhiCudaConfig& c = config_;
  const int bs = options_.block_size;
  const int n = static_cast<int>(s.tokens.size());
  const std::string who = "Forward: sequence " + std::to_string(i) + ": ";
  if (n == 0) return CudaStatus::Invalid(who + "no tokens");
  if (s.start_pos < 0 || s.start_pos + n > c.max_positions) {
    return CudaStatus::Invalid(who + "positions [" + std::to_string(s.start_pos) + ", " +
                               std::to_string(s.start_pos + n) + ") exceed max_positions " +
                               std::to_string(c.max_positions));
  }
  const int need = (s.start_pos + n + bs - 1) / bs;
  if (static_cast<int>(s.block_table.size()) < need) {
    return CudaStatus::Invalid(who + "block_table has " + std::to_string(s.block_table.size()) +
                               " blocks, positions need " + std::to_string(need));
  }
  for (int j = 0; j < need; ++j) {
    if (s.block_table[j] < 0 || s.block_table[j] >= kv_num_blocks_) {
      return CudaStatus::Invalid(who + "block id " + std::to_string(s.block_table[j]) +
                                 " outside [0, " + std::to_string(kv_num_blocks_) + ")");
    }
  }
  for (int32_t t : s.tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return CudaStatus::Invalid(who + "token id " + std::to_string(t) + " outside [0, " +
                                 std::to_string(c.vocab_size) + ")");
    }
  }
  if (s.num_candidates < 0 || s.num_candidates > kMaxTopCandidates ||
      (s.num_candidates > 0 && s.all_logits)) {
    return CudaStatus::Invalid(who + "num_candidates " + std::to_string(s.num_candidates) +
                               " (want 0, or 1.." + std::to_string(kMaxTopCandidates) +
                               " without all_logits)");
  }
  if (s.adapter_slot < 0 || s.adapter_slot > options_.max_adapter_slots) {
    return CudaStatus::Invalid(who + "adapter_slot " + std::to_string(s.adapter_slot) +
                               " outside [0, " + std::to_string(options_.max_adapter_slots) +
                               "] (max_adapter_slots)");
  }
  if (s.adapter_slot > 0 && !adapter_held_[s.adapter_slot]) {
    return CudaStatus::Invalid(who + "adapter_slot " + std::to_string(s.adapter_slot) +
                               " holds no adapter");
  }
  return {};
}

PhiCudaModel::StepPlan PhiCudaModel::PlanStep(std::span<const PhiSeqInput> seqs) const {
  StepPlan p;
  p.n_seq_real = p.n_seq = static_cast<int>(seqs.size());
  p.decode = true;
  bool any_candidates = false, any_adapter = false;
  for (const PhiSeqInput& s : seqs) {
    const int n = static_cast<int>(s.tokens.size());
    p.n_tok += n;
    p.n_rows += s.all_logits ? n : 1;
    p.decode = p.decode && n == 1 && !s.all_logits;
    any_candidates = any_candidates || s.num_candidates > 0;
    any_adapter = any_adapter || s.adapter_slot > 0;
  }
  // Steps with adapters run eagerly (their segments vary by step); the base alone as ever.
  p.graph = p.decode && !any_adapter && options_.use_cuda_graphs &&
            decode_graph_bucket(p.n_seq) <= options_.max_seqs;
  if (p.graph) {
    // Padding rows up to the bucket write only the scratch KV block.
    p.n_seq = decode_graph_bucket(p.n_seq);
    p.n_tok = p.n_rows = p.n_seq;
  }
  // Tensor parallelism with candidate rows: the ranks gather whole rows' slices and candidate
  // records instead of every row's slices (GatherCandidateStep).
  p.tp_candidates = any_candidates && collectives_ != nullptr && !p.graph;
  return p;
}

PhiCudaModel::Layout PhiCudaModel::PackStep(std::span<const PhiSeqInput> seqs,
                                            const StepPlan& p, StepPack* pack,
                                            PhiStepOutput* out) {
  std::vector<int32_t> num_new(p.n_seq, 1), tile_seq, tile_first;
  for (int i = 0; i < p.n_seq_real; ++i) num_new[i] = static_cast<int>(seqs[i].tokens.size());
  if (!p.decode) prefill_tiles(num_new.data(), p.n_seq, &tile_seq, &tile_first);
  const std::vector<LoraSegment> lora = LoraSegmentsOf(seqs);
  Layout L = Layout::Make(p.n_tok, p.n_seq, static_cast<int>(tile_seq.size()), p.n_rows,
                          max_blocks_per_seq_, static_cast<int>(lora.size()));
  PackLoraSegments(lora, &L);
  ResetStepOutput(p.n_seq_real, out);
  int tok = 0, row = 0;
  for (int i = 0; i < p.n_seq; ++i) {
    const PhiSeqInput* s = i < p.n_seq_real ? &seqs[i] : nullptr;
    const int rows = PackSequence(L, i, s, num_new[i], tok, row);
    pack->max_ctx = std::max(pack->max_ctx, (s != nullptr ? s->start_pos : 0) + num_new[i]);
    if (s != nullptr) RecordRows(L, i, *s, row, rows, pack, out);
    tok += num_new[i];
    row += rows;
  }
  for (size_t t = 0; t < tile_seq.size(); ++t) {
    MetaHost(L.tile_seq)[t] = tile_seq[t];
    MetaHost(L.tile_first)[t] = tile_first[t];
  }
  out->total_rows = row;
  out->logits_row.resize(row);
  for (int r = 0; r < row; ++r) out->logits_row[r] = r;
  out->assembled_rows = row;
  return L;
}

void PhiCudaModel::ResetStepOutput(int n_seq, PhiStepOutput* out) {
  out->first_row.assign(n_seq, 0);
  out->num_rows.assign(n_seq, 0);
  out->candidate_record.assign(n_seq, -1);
  out->candidate_records.clear();
  out->candidate_stride = 0;
  out->candidate_ranks = 1;
  out->candidate_slices = 1;
}

// Sequence i's tokens, positions, cache slots, block table and logits rows into the host
// metadata (s null: a padding row of a decode graph, which writes the scratch block). Returns
// the sequence's logits rows.
int PhiCudaModel::PackSequence(const Layout& L, int i, const PhiSeqInput* s, int n, int tok,
                               int row) {
  const int bs = options_.block_size;
  const int start = s != nullptr ? s->start_pos : 0;
  MetaHost(L.q_offset)[i] = tok;
  MetaHost(L.start_pos)[i] = start;
  MetaHost(L.num_new)[i] = n;
  MetaHost(L.context_lens)[i] = start + n;
  int32_t* bt = MetaHost(L.block_tables) + static_cast<size_t>(i) * max_blocks_per_seq_;
  for (int j = 0; j < max_blocks_per_seq_; ++j) {
    bt[j] = s != nullptr && j < static_cast<int>(s->block_table.size()) ? s->block_table[j]
                                                                         : kv_num_blocks_;
  }
  for (int j = 0; j < n; ++j) {
    const int pos = start + j;
    MetaHost(L.tokens)[tok + j] = s != nullptr ? s->tokens[j] : 0;
    MetaHost(L.positions)[tok + j] = pos;
    MetaHost(L.slots)[tok + j] = bt[pos / bs] * bs + pos % bs;
  }
  const int rows = s != nullptr && s->all_logits ? n : 1;
  for (int r = 0; r < rows; ++r) MetaHost(L.row_index)[row + r] = tok + n - rows + r;
  return rows;
}

// Where a real sequence's rows went: its candidate record, or a run of whole rows.
void PhiCudaModel::RecordRows(const Layout& L, int i, const PhiSeqInput& s, int row, int rows,
                              StepPack* pack, PhiStepOutput* out) {
  out->first_row[i] = row;
  out->num_rows[i] = rows;
  if (s.num_candidates > 0) {
    MetaHost(L.cand_rows)[pack->n_cand] = row + rows - 1;
    MetaHost(L.cand_counts)[pack->n_cand] = s.num_candidates;
    MetaHost(L.cand_lse)[pack->n_cand] = s.candidate_lse ? 1 : 0;
    out->candidate_stride = std::max(out->candidate_stride, s.num_candidates);
    out->candidate_record[i] = pack->n_cand++;
    return;
  }
  std::vector<Run>& runs = pack->whole_runs;
  if (!runs.empty() && runs.back().first + runs.back().rows == row) {
    runs.back().rows += rows;
  } else {
    runs.push_back({row, rows});
  }
  pack->whole_rows += rows;
}

int32_t* PhiCudaModel::MetaHost(size_t offset) {
  return reinterpret_cast<int32_t*>(meta_host_ + offset);
}

// Captured graphs use the largest context so one graph serves every length. A graph holds the
// forward pass only, so decode steps replay it whether or not the step then selects
// candidates (their count varies by step). A bucket's first step
// runs eagerly and is then captured.
CudaStatus PhiCudaModel::ReplayDecodeGraph(const Layout& L) {
  auto it = graphs_.find(L.n_seq);
  if (it != graphs_.end()) {
    PHI_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
    return {};
  }
  PHI_CUDA_RETURN_IF_ERROR(RunBodyOrFallBack(L, true, config_.max_positions));
  cudaGraphExec_t exec;
  CudaStatus st = CaptureDecodeGraph(L, &exec);
  if (!st.ok() && options_.programmatic_launch && collectives_ == nullptr) {
    // Captured programmatic edges refused (the eager launch above took them): capture plain
    // launches instead, for this and every later graph.
    cudaGetLastError();
    options_.programmatic_launch = false;
    st = CaptureDecodeGraph(L, &exec);
  }
  PHI_CUDA_RETURN_IF_ERROR(st);
  graphs_[L.n_seq] = exec;  // this step's results came from the eager run
  return {};
}

CudaStatus PhiCudaModel::SelectCandidates(const Layout& L, int n_cand, const PhiStepOutput& out,
                                          size_t cand_bytes) {
  TopCandidatesArgs ta;
  ta.logits = logits_;
  ta.ld = config_.vocab_size;
  ta.width = config_.vocab_size;
  ta.id0 = 0;
  ta.vocab_limit = config_.vocab_size;  // the full-row log-sum-exp, padding included
  ta.rows = Meta(L.cand_rows);
  ta.counts = Meta(L.cand_counts);
  ta.want_lse = Meta(L.cand_lse);
  ta.num_rows = n_cand;
  ta.max_count = out.candidate_stride;
  ta.slices = out.candidate_slices;
  ta.out = cand_dev_;
  PHI_CUDA_RETURN_IF_ERROR(top_candidates_forward(ta, stream_));
  PHI_CUDA_CHECK(
      cudaMemcpyAsync(cand_host_, cand_dev_, cand_bytes, cudaMemcpyDeviceToHost, stream_));
  return {};
}

// With collectives the step's wait is bounded by the group's timeout (a dead peer would leave
// an all-reduce waiting on the GPU forever).
CudaStatus PhiCudaModel::WaitForStep() {
  if (collectives_ != nullptr) PHI_CUDA_RETURN_IF_ERROR(collectives_->Synchronize(stream_));
  PHI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return {};
}

int PhiCudaModel::CandidateSlices(int n_cand, int stride) const {
  if (n_cand <= 0) return 1;
  const int width = collectives_ != nullptr ? config_.local_vocab() : config_.vocab_size;
  // CandidateArea holds max_seqs records at the widest count: more at narrower ones.
  const int max_records = static_cast<int>(options_.max_seqs * CandidateRecordBytes(kMaxTopCandidates) /
                                           CandidateRecordBytes(std::max(stride, 1)));
  if (options_.candidate_slices > 0) {
    return std::clamp(std::min(options_.candidate_slices, max_records / n_cand), 1, std::max(width, 1));
  }
  // Tensor-parallel ranks all-gather their records, so they must agree on the count: the
  // automatic choice reads the local GPU, which need not be the same model on every rank.
  if (collectives_ != nullptr) return 1;
  return top_candidates_slices(n_cand, width, stride, max_records);
}

CudaStatus PhiCudaModel::CopyLogits(int first_row, int num_rows, float* host) const {
  if (first_row < 0 || num_rows < 0 || first_row + num_rows > options_.max_logit_rows) {
    return CudaStatus::Invalid("CopyLogits: rows [" + std::to_string(first_row) + ", " +
                               std::to_string(first_row + num_rows) + ") out of range");
  }
  PHI_CUDA_CHECK(cudaMemcpy(host, logits_ + static_cast<size_t>(first_row) * config_.vocab_size,
                            4 * static_cast<size_t>(num_rows) * config_.vocab_size,
                            cudaMemcpyDeviceToHost));
  return {};
}

}  // namespace phi::worker::cuda
