// The forward pass of one step on the device (PhiCudaModel::RunBody and what decides its
// shape): which kernels run for each layer, the fused one-token decode path
// (PhiCudaOptions::fuse_decode), programmatic dependent launch for decode steps, and the
// capture of decode steps into CUDA graphs. Forward (phi_cuda_model.cc) lays out the step's
// metadata and calls it; the tensor-parallel collectives are in phi_cuda_model_tp.cc.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "services/worker/backends/cuda/phi_cuda_model_internal.h"

namespace phi::worker::cuda {

CudaStatus PhiCudaModel::RunBody(const Layout& L, bool decode, int max_context_len, bool gather_logits) {
  const PhiCudaConfig& c = config_;
  const int h = c.hidden_size;
  auto i32 = [&](size_t off) { return reinterpret_cast<const int32_t*>(meta_dev_ + off); };
  // Bytes of one layer's K (or V) cache.
  const size_t per_cache = static_cast<size_t>(kv_num_blocks_ + 1) * c.num_heads *
                           options_.block_size * c.head_dim *
                           kv_cache_dtype_bytes(options_.kv_dtype);
  PhiCudaCollectives* coll = collectives_;
  // Decode of 1..8 tokens: LayerNorm and gelu inside the decode GEMVs, rotary inside
  // attention.
  const bool fused = FusedDecode(L, decode);
  // Decode steps (one group member alone: collectives are not kernels of ours) chain their
  // kernels by programmatic dependent launch; cuBLASLt's GEMMs in between launch plainly.
  const bool pdl = decode && coll == nullptr && options_.programmatic_launch;
  Gemv1Args fused_gemv;
  fused_gemv.m = L.n_tok;
  fused_gemv.eps = c.layer_norm_eps;
  fused_gemv.pdl = pdl;
  PHI_CUDA_RETURN_IF_ERROR(embedding_forward(i32(L.tokens), weights_.embed, x_, L.n_tok,
                                             c.local_vocab(), h, stream_, c.vocab_begin()));
  // Vocabulary-split embedding: each id's row comes from the one rank that holds it.
  if (coll != nullptr) {
    PHI_CUDA_RETURN_IF_ERROR(coll->AllReduceSum(x_, static_cast<size_t>(L.n_tok) * h, stream_));
  }
  for (int li = 0; li < c.num_layers; ++li) {
    const PhiCudaLayer& w = weights_.layers[li];
    char* kc = kv_arena_ + (2 * static_cast<size_t>(li)) * per_cache;
    char* vc = kc + per_cache;
    if (fused) {
      Gemv1Args g = fused_gemv;
      g.prologue = GemvPrologue::kLayerNorm;
      g.x = x_;
      g.gamma = w.ln_w;
      g.beta_ln = w.ln_b;
      g.w = w.w1;
      g.bias = w.b1;
      g.d = qkvf_;
      g.n = c.w1_rows();
      g.k = h;
      PHI_CUDA_RETURN_IF_ERROR(gemv1_forward(g, stream_));
    } else {
      PHI_CUDA_RETURN_IF_ERROR(layernorm_forward(x_, nullptr, w.ln_w, w.ln_b, h_, L.n_tok, h,
                                                 c.layer_norm_eps, stream_, pdl));
      PHI_CUDA_RETURN_IF_ERROR(
          gemm_->Matmul(h_, w.w1, w.b1, qkvf_, false, 0.0f, L.n_tok, c.w1_rows(), h, stream_));
    }
    // The fused decode path rotates inside decode attention (PagedAttentionArgs::new_slots).
    if (!fused) {
      RotaryKvArgs rk;
      rk.qkv = qkvf_;
      rk.row_stride = c.w1_rows();
      rk.positions = i32(L.positions);
      rk.slots = i32(L.slots);
      rk.k_cache = kc;
      rk.v_cache = vc;
      rk.kv_dtype = options_.kv_dtype;
      rk.k_scale = rk.v_scale = options_.kv_scale;
      rk.num_tokens = L.n_tok;
      rk.num_heads = c.num_heads;
      rk.head_dim = c.head_dim;
      rk.rotary_dim = c.rotary_dim;
      rk.block_size = options_.block_size;
      rk.theta = c.rope_theta;
      rk.pdl = pdl;
      PHI_CUDA_RETURN_IF_ERROR(rotary_kv_forward(rk, stream_));
    }
    PagedAttentionArgs at;
    at.q = qkvf_;
    at.q_stride = c.w1_rows();
    at.k_cache = kc;
    at.v_cache = vc;
    at.kv_dtype = options_.kv_dtype;
    at.k_scale = at.v_scale = options_.kv_scale;
    at.decode_partitions = options_.decode_partitions;
    at.block_tables = i32(L.block_tables);
    at.max_blocks_per_seq = L.max_blocks;
    at.out = mid_;
    at.out_stride = c.w2_cols();
    at.num_seqs = L.n_seq;
    at.num_heads = c.num_heads;
    at.head_dim = c.head_dim;
    at.block_size = options_.block_size;
    at.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    at.pdl = pdl;
    at.tensor_cores = options_.tensor_core_prefill;
    if (fused) {
      at.new_slots = i32(L.slots);
      at.rotary_dim = c.rotary_dim;
      at.theta = c.rope_theta;
    }
    if (decode) {
      PHI_CUDA_RETURN_IF_ERROR(
          attention_decode(at, i32(L.context_lens), max_context_len, attn_ws_, attn_counters_,
                           stream_));
    } else {
      PrefillTiles tiles;
      tiles.q_offset = i32(L.q_offset);
      tiles.start_pos = i32(L.start_pos);
      tiles.num_new = i32(L.num_new);
      tiles.tile_seq = i32(L.tile_seq);
      tiles.tile_first = i32(L.tile_first);
      tiles.num_tiles = L.n_tiles;
      PHI_CUDA_RETURN_IF_ERROR(attention_prefill(at, tiles, stream_));
    }
    // The decode W2 GEMV: x += [a|g] W2^T + b2, attention columns summed last (fused or
    // not, so both paths give the same bits).
    Gemv1Args w2g = fused_gemv;
    w2g.a = mid_;
    w2g.w = w.w2;
    w2g.bias = w.b2;
    w2g.d = x_;
    w2g.d_f32 = true;
    w2g.beta = 1.0f;
    w2g.n = h;
    w2g.k = c.w2_cols();
    w2g.first_col = c.num_heads * c.head_dim;
    if (fused) {
      w2g.prologue = GemvPrologue::kGeluConcat;
      w2g.a_cols = w2g.first_col;
      w2g.f = qkvf_ + c.qkv_width();
      w2g.f_cols = c.intermediate_size;
      w2g.f_stride = c.w1_rows();
      PHI_CUDA_RETURN_IF_ERROR(gemv1_forward(w2g, stream_));
      continue;
    }
    PHI_CUDA_RETURN_IF_ERROR(gelu_forward(qkvf_ + c.qkv_width(), c.w1_rows(),
                                          mid_ + c.num_heads * c.head_dim, c.w2_cols(), L.n_tok,
                                          c.intermediate_size, stream_, pdl));
    if (coll == nullptr && L.n_tok <= std::max(1, options_.gemv_max_m) &&
        gemv1_fits(L.n_tok, c.w2_cols())) {
      w2g.pdl = false;
      PHI_CUDA_RETURN_IF_ERROR(gemv1_forward(w2g, stream_));
    } else if (coll == nullptr) {
      PHI_CUDA_RETURN_IF_ERROR(
          gemm_->Matmul(mid_, w.w2, w.b2, x_, true, 1.0f, L.n_tok, h, c.w2_cols(), stream_));
    } else {
      // Rank 0: x + partial + b2; the others: their partial alone. The layer's one
      // all-reduce then leaves x + b2 + Σ partials on every rank.
      const bool first = c.tp_rank == 0;
      PHI_CUDA_RETURN_IF_ERROR(gemm_->Matmul(mid_, w.w2, first ? w.b2 : nullptr, x_, true,
                                             first ? 1.0f : 0.0f, L.n_tok, h, c.w2_cols(),
                                             stream_));
      PHI_CUDA_RETURN_IF_ERROR(
          coll->AllReduceSum(x_, static_cast<size_t>(L.n_tok) * h, stream_));
    }
  }
  if (fused) {
    Gemv1Args g = fused_gemv;
    g.prologue = GemvPrologue::kLayerNorm;
    g.m = L.n_rows;
    g.x = x_;
    g.row_index = i32(L.row_index);
    g.gamma = weights_.final_ln_w;
    g.beta_ln = weights_.final_ln_b;
    g.w = weights_.lm_w;
    g.bias = weights_.lm_b;
    g.d = logits_;
    g.d_f32 = true;
    g.n = c.vocab_size;
    g.k = h;
    return gemv1_forward(g, stream_);
  }
  PHI_CUDA_RETURN_IF_ERROR(layernorm_forward(x_, i32(L.row_index), weights_.final_ln_w,
                                             weights_.final_ln_b, hf_, L.n_rows, h,
                                             c.layer_norm_eps, stream_, pdl));
  if (coll == nullptr) {
    PHI_CUDA_RETURN_IF_ERROR(gemm_->Matmul(hf_, weights_.lm_w, weights_.lm_b, logits_, true,
                                           0.0f, L.n_rows, c.vocab_size, h, stream_));
  } else {
    // This rank's vocabulary columns of every row, gathered rank-major, then laid side by
    // side into full rows (one strided copy per rank).
    const size_t vl = c.local_vocab();
    PHI_CUDA_RETURN_IF_ERROR(gemm_->Matmul(hf_, weights_.lm_w, weights_.lm_b, logits_local_,
                                           true, 0.0f, L.n_rows, c.local_vocab(), h, stream_));
    if (!gather_logits) return {};
    PHI_CUDA_RETURN_IF_ERROR(
        coll->AllGather(logits_local_, logits_gather_, 4 * vl * L.n_rows, stream_));
    for (int r = 0; r < c.tp_world; ++r) {
      PHI_CUDA_CHECK(cudaMemcpy2DAsync(logits_ + r * vl, 4 * static_cast<size_t>(c.vocab_size),
                                       logits_gather_ + r * vl * L.n_rows, 4 * vl, 4 * vl,
                                       L.n_rows, cudaMemcpyDeviceToDevice, stream_));
    }
  }
  return {};
}

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
  return options_.fuse_decode && decode && L.n_tok >= 1 && L.n_tok <= kGemvMaxM &&
         L.n_rows >= 1 && collectives_ == nullptr && gemv1_layernorm_fits(c.hidden_size) &&
         gemv1_fits(L.n_tok, c.hidden_size) && gemv1_fits(L.n_tok, c.w2_cols());
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
