// The forward pass of one step on the device (PhiCudaModel::RunBody): the layer path chosen
// once per pass (PhiCudaModel::LayerPath), one straight-line layer function per path, the
// final LayerNorm and lm_head per path, programmatic dependent launch for decode steps, and
// the capture of decode steps into CUDA graphs. Forward (phi_cuda_model.cc) lays out the
// step's metadata and calls it; the tensor-parallel gathers are in phi_cuda_model_tp.cc.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "services/worker/backends/cuda/phi_cuda_model_internal.h"

namespace phi::worker::cuda {

const int32_t* PhiCudaModel::Meta(size_t offset) const {
  return reinterpret_cast<const int32_t*>(meta_dev_ + offset);
}

PhiCudaModel::Pass PhiCudaModel::PlanPass(const Layout& L, bool decode, int max_context_len,
                                          bool gather_logits) const {
  Pass p{&L};
  p.path = collectives_ != nullptr ? LayerPath::kTensorParallel
           : FusedDecode(L, decode) ? LayerPath::kFusedDecode
                                    : LayerPath::kSingleGpu;
  p.decode = decode;
  // Decode steps (one group member alone: collectives are not kernels of ours) chain their
  // kernels by programmatic dependent launch; cuBLASLt's GEMMs in between launch plainly.
  p.pdl = decode && collectives_ == nullptr && options_.programmatic_launch;
  p.max_context_len = max_context_len;
  p.gather_logits = gather_logits;
  return p;
}

CudaStatus PhiCudaModel::RunBody(const Layout& L, bool decode, int max_context_len,
                                 bool gather_logits) {
  const Pass p = PlanPass(L, decode, max_context_len, gather_logits);
  PHI_CUDA_RETURN_IF_ERROR(Embed(p));
  for (int li = 0; li < config_.num_layers; ++li) {
    switch (p.path) {
      case LayerPath::kFusedDecode: PHI_CUDA_RETURN_IF_ERROR(FusedDecodeLayer(p, li)); break;
      case LayerPath::kSingleGpu: PHI_CUDA_RETURN_IF_ERROR(SingleGpuLayer(p, li)); break;
      case LayerPath::kTensorParallel: PHI_CUDA_RETURN_IF_ERROR(TensorParallelLayer(p, li)); break;
    }
  }
  switch (p.path) {
    case LayerPath::kFusedDecode: return FusedDecodeHead(p);
    case LayerPath::kSingleGpu: return SingleGpuHead(p);
    case LayerPath::kTensorParallel: return TensorParallelHead(p);
  }
  return {};
}

CudaStatus PhiCudaModel::Embed(const Pass& p) {
  const Layout& L = *p.layout;
  const int h = config_.hidden_size;
  PHI_CUDA_RETURN_IF_ERROR(embedding_forward(Meta(L.tokens), weights_.embed, x_, L.n_tok,
                                             config_.local_vocab(), h, stream_,
                                             config_.vocab_begin()));
  // Vocabulary-split embedding: each id's row comes from the one rank that holds it.
  if (p.path != LayerPath::kTensorParallel) return {};
  return collectives_->AllReduceSum(x_, static_cast<size_t>(L.n_tok) * h, stream_);
}

// Decode of 1..8 tokens in 3 kernels: LayerNorm inside the W1 GEMV, rotary and the KV write
// inside decode attention, gelu inside the W2 GEMV.
CudaStatus PhiCudaModel::FusedDecodeLayer(const Pass& p, int li) {
  const PhiCudaConfig& c = config_;
  const PhiCudaLayer& w = weights_.layers[li];
  DecodeGemvArgs g = GemvBase(p);
  g.prologue = GemvPrologue::kLayerNorm;
  g.x = x_;
  g.gamma = w.ln_w;
  g.beta_ln = w.ln_b;
  g.w = w.w1;
  g.bias = w.b1;
  g.d = qkvf_;
  g.n = c.w1_rows();
  g.k = c.hidden_size;
  PHI_CUDA_RETURN_IF_ERROR(decode_gemv_forward(g, stream_));
  PHI_CUDA_RETURN_IF_ERROR(Attention(p, li));
  DecodeGemvArgs w2 = W2GemvArgs(p, w);
  w2.prologue = GemvPrologue::kGeluConcat;
  w2.a_cols = w2.first_col;
  w2.f = qkvf_ + c.qkv_width();
  w2.f_cols = c.intermediate_size;
  w2.f_stride = c.w1_rows();
  return decode_gemv_forward(w2, stream_);
}

// One GPU, unfused.
CudaStatus PhiCudaModel::SingleGpuLayer(const Pass& p, int li) {
  PHI_CUDA_RETURN_IF_ERROR(W2Input(p, li));
  PHI_CUDA_RETURN_IF_ERROR(SingleGpuW2(p, li));
  return LoraW2(p, li);
}

// x += [attn | gelu] W2^T + b2 by the decode GEMV for up to gemv_max_m tokens, else cuBLASLt.
CudaStatus PhiCudaModel::SingleGpuW2(const Pass& p, int li) {
  const PhiCudaConfig& c = config_;
  const PhiCudaLayer& w = weights_.layers[li];
  const int n_tok = p.layout->n_tok;
  if (n_tok <= std::max(1, options_.gemv_max_m) && decode_gemv_fits(n_tok, c.w2_cols())) {
    DecodeGemvArgs w2 = W2GemvArgs(p, w);
    w2.pdl = false;
    return decode_gemv_forward(w2, stream_);
  }
  return gemm_->Matmul(mid_, w.w2, w.b2, x_, true, 1.0f, n_tok, c.hidden_size, c.w2_cols(),
                       stream_);
}

// A tensor-parallel rank: rank 0 writes x + partial + b2, the others their partial alone; the
// layer's one all-reduce then leaves x + b2 + Σ partials on every rank.
CudaStatus PhiCudaModel::TensorParallelLayer(const Pass& p, int li) {
  const PhiCudaConfig& c = config_;
  const PhiCudaLayer& w = weights_.layers[li];
  const int n_tok = p.layout->n_tok;
  PHI_CUDA_RETURN_IF_ERROR(W2Input(p, li));
  const bool first = c.tp_rank == 0;
  PHI_CUDA_RETURN_IF_ERROR(gemm_->Matmul(mid_, w.w2, first ? w.b2 : nullptr, x_, true,
                                         first ? 1.0f : 0.0f, n_tok, c.hidden_size,
                                         c.w2_cols(), stream_));
  PHI_CUDA_RETURN_IF_ERROR(LoraW2(p, li));
  return collectives_->AllReduceSum(x_, static_cast<size_t>(n_tok) * c.hidden_size, stream_);
}

// The unfused layer up to its W2 product: mid_ = [attention | gelu(fc1)].
CudaStatus PhiCudaModel::W2Input(const Pass& p, int li) {
  PHI_CUDA_RETURN_IF_ERROR(LayerNormW1(p, weights_.layers[li]));
  PHI_CUDA_RETURN_IF_ERROR(LoraW1(p, li));
  PHI_CUDA_RETURN_IF_ERROR(RotaryKv(p, li));
  PHI_CUDA_RETURN_IF_ERROR(Attention(p, li));
  return Gelu(p);
}

CudaStatus PhiCudaModel::LayerNormW1(const Pass& p, const PhiCudaLayer& w) {
  const PhiCudaConfig& c = config_;
  const int n_tok = p.layout->n_tok, h = c.hidden_size;
  PHI_CUDA_RETURN_IF_ERROR(layernorm_forward(x_, nullptr, w.ln_w, w.ln_b, h_, n_tok, h,
                                             c.layer_norm_eps, stream_, p.pdl));
  return gemm_->Matmul(h_, w.w1, w.b1, qkvf_, false, 0.0f, n_tok, c.w1_rows(), h, stream_);
}

CudaStatus PhiCudaModel::RotaryKv(const Pass& p, int li) {
  const PhiCudaConfig& c = config_;
  RotaryKvArgs rk;
  rk.qkv = qkvf_;
  rk.row_stride = c.w1_rows();
  rk.positions = Meta(p.layout->positions);
  rk.slots = Meta(p.layout->slots);
  rk.k_cache = KCache(li);
  rk.v_cache = VCache(li);
  rk.kv_dtype = options_.kv_dtype;
  rk.k_scale = rk.v_scale = options_.kv_scale;
  rk.num_tokens = p.layout->n_tok;
  rk.num_heads = c.num_heads;
  rk.head_dim = c.head_dim;
  rk.rotary_dim = c.rotary_dim;
  rk.block_size = options_.block_size;
  rk.theta = c.rope_theta;
  rk.pdl = p.pdl;
  return rotary_kv_forward(rk, stream_);
}

// Paged attention over the cache into mid_'s first columns: decode or prefill tiles; the
// fused decode path also rotates q and k and writes the new K/V (PagedAttentionArgs::new_slots).
CudaStatus PhiCudaModel::Attention(const Pass& p, int li) {
  const PhiCudaConfig& c = config_;
  const Layout& L = *p.layout;
  PagedAttentionArgs at;
  at.q = qkvf_;
  at.q_stride = c.w1_rows();
  at.k_cache = KCache(li);
  at.v_cache = VCache(li);
  at.kv_dtype = options_.kv_dtype;
  at.k_scale = at.v_scale = options_.kv_scale;
  at.decode_partitions = options_.decode_partitions;
  at.block_tables = Meta(L.block_tables);
  at.max_blocks_per_seq = L.max_blocks;
  at.out = mid_;
  at.out_stride = c.w2_cols();
  at.num_seqs = L.n_seq;
  at.num_heads = c.num_heads;
  at.head_dim = c.head_dim;
  at.block_size = options_.block_size;
  at.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  at.pdl = p.pdl;
  at.tensor_cores = options_.tensor_core_prefill;
  if (p.path == LayerPath::kFusedDecode) {
    at.new_slots = Meta(L.slots);
    at.rotary_dim = c.rotary_dim;
    at.theta = c.rope_theta;
  }
  if (p.decode) {
    return attention_decode(at, Meta(L.context_lens), p.max_context_len, attn_ws_,
                            attn_counters_, stream_);
  }
  PrefillTiles tiles;
  tiles.q_offset = Meta(L.q_offset);
  tiles.start_pos = Meta(L.start_pos);
  tiles.num_new = Meta(L.num_new);
  tiles.tile_seq = Meta(L.tile_seq);
  tiles.tile_first = Meta(L.tile_first);
  tiles.num_tiles = L.n_tiles;
  return attention_prefill(at, tiles, stream_);
}

CudaStatus PhiCudaModel::Gelu(const Pass& p) {
  const PhiCudaConfig& c = config_;
  return gelu_forward(qkvf_ + c.qkv_width(), c.w1_rows(), mid_ + c.num_heads * c.head_dim,
                      c.w2_cols(), p.layout->n_tok, c.intermediate_size, stream_, p.pdl);
}

DecodeGemvArgs PhiCudaModel::GemvBase(const Pass& p) const {
  DecodeGemvArgs g;
  g.m = p.layout->n_tok;
  g.eps = config_.layer_norm_eps;
  g.pdl = p.pdl;
  return g;
}

// The decode W2 GEMV: x += [a|g] W2^T + b2, attention columns summed last (fused or not, so
// both paths give the same bits).
DecodeGemvArgs PhiCudaModel::W2GemvArgs(const Pass& p, const PhiCudaLayer& w) const {
  const PhiCudaConfig& c = config_;
  DecodeGemvArgs g = GemvBase(p);
  g.a = mid_;
  g.w = w.w2;
  g.bias = w.b2;
  g.d = x_;
  g.d_f32 = true;
  g.beta = 1.0f;
  g.n = c.hidden_size;
  g.k = c.w2_cols();
  g.first_col = c.num_heads * c.head_dim;
  return g;
}

// The final LayerNorm inside the lm_head GEMV.
CudaStatus PhiCudaModel::FusedDecodeHead(const Pass& p) {
  const PhiCudaConfig& c = config_;
  DecodeGemvArgs g = GemvBase(p);
  g.prologue = GemvPrologue::kLayerNorm;
  g.m = p.layout->n_rows;
  g.x = x_;
  g.row_index = Meta(p.layout->row_index);
  g.gamma = weights_.final_ln_w;
  g.beta_ln = weights_.final_ln_b;
  g.w = weights_.lm_w;
  g.bias = weights_.lm_b;
  g.d = logits_;
  g.d_f32 = true;
  g.n = c.vocab_size;
  g.k = c.hidden_size;
  return decode_gemv_forward(g, stream_);
}

CudaStatus PhiCudaModel::FinalLayerNorm(const Pass& p) {
  const PhiCudaConfig& c = config_;
  return layernorm_forward(x_, Meta(p.layout->row_index), weights_.final_ln_w,
                           weights_.final_ln_b, hf_, p.layout->n_rows, c.hidden_size,
                           c.layer_norm_eps, stream_, p.pdl);
}

CudaStatus PhiCudaModel::SingleGpuHead(const Pass& p) {
  const PhiCudaConfig& c = config_;
  PHI_CUDA_RETURN_IF_ERROR(FinalLayerNorm(p));
  return gemm_->Matmul(hf_, weights_.lm_w, weights_.lm_b, logits_, true, 0.0f,
                       p.layout->n_rows, c.vocab_size, c.hidden_size, stream_);
}

// This rank's vocabulary columns of every row, gathered rank-major, then laid side by side
// into full rows (one strided copy per rank); without gather_logits they stay in
// logits_local_ (GatherCandidateStep).
CudaStatus PhiCudaModel::TensorParallelHead(const Pass& p) {
  const PhiCudaConfig& c = config_;
  const int n_rows = p.layout->n_rows;
  const size_t vl = c.local_vocab();
  PHI_CUDA_RETURN_IF_ERROR(FinalLayerNorm(p));
  PHI_CUDA_RETURN_IF_ERROR(gemm_->Matmul(hf_, weights_.lm_w, weights_.lm_b, logits_local_, true,
                                         0.0f, n_rows, c.local_vocab(), c.hidden_size, stream_));
  if (!p.gather_logits) return {};
  PHI_CUDA_RETURN_IF_ERROR(
      collectives_->AllGather(logits_local_, logits_gather_, 4 * vl * n_rows, stream_));
  for (int r = 0; r < c.tp_world; ++r) {
    PHI_CUDA_CHECK(cudaMemcpy2DAsync(logits_ + r * vl, 4 * static_cast<size_t>(c.vocab_size),
                                     logits_gather_ + r * vl * n_rows, 4 * vl, 4 * vl, n_rows,
                                     cudaMemcpyDeviceToDevice, stream_));
  }
  return {};
}

// Bytes of one layer's K (or V) cache; layer li's K then V follow each other in kv_arena_.
size_t PhiCudaModel::LayerCacheBytes() const {
  return static_cast<size_t>(kv_num_blocks_ + 1) * config_.num_heads * options_.block_size *
         config_.head_dim * kv_cache_dtype_bytes(options_.kv_dtype);
}
char* PhiCudaModel::KCache(int li) const {
  return kv_arena_ + 2 * static_cast<size_t>(li) * LayerCacheBytes();
}
char* PhiCudaModel::VCache(int li) const { return KCache(li) + LayerCacheBytes(); }

CudaStatus PhiCudaModel::CaptureDecodeGraph(const Layout& L, cudaGraphExec_t* exec) {
  cudaGraph_t g;
  PHI_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  const CudaStatus body = RunBody(L, true, config_.max_positions);
  const cudaError_t end = cudaStreamEndCapture(stream_, &g);
  PHI_CUDA_RETURN_IF_ERROR(body);
  PHI_CUDA_CHECK(end);
  const cudaError_t inst = cudaGraphInstantiate(exec, g, 0);
  cudaGraphDestroy(g);
  PHI_CUDA_CHECK(inst);
  return {};
}

bool PhiCudaModel::FusedDecode(const Layout& L, bool decode) const {
  const PhiCudaConfig& c = config_;
  return options_.fuse_decode && decode && L.n_lora_segments == 0 && L.n_tok >= 1 &&
         L.n_tok <= kGemvMaxM && L.n_rows >= 1 && collectives_ == nullptr &&
         decode_gemv_layernorm_fits(c.hidden_size) && decode_gemv_fits(L.n_tok, c.hidden_size) &&
         decode_gemv_fits(L.n_tok, c.w2_cols());
}

CudaStatus PhiCudaModel::RunBodyOrFallBack(const Layout& L, bool decode, int max_context_len,
                                           bool gather_logits) {
  const CudaStatus st = RunBody(L, decode, max_context_len, gather_logits);
  if (st.ok() || !options_.programmatic_launch || !decode || collectives_ != nullptr) return st;
  // A launch with programmatic dependent launch failed: run the step without it, and every
  // later step too. Errors that were not the launch's fail again below.
  cudaGetLastError();
  options_.programmatic_launch = false;
  return RunBody(L, decode, max_context_len, gather_logits);
}

}  // namespace phi::worker::cuda
