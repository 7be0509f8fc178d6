// The tensor-parallel side of PhiCudaModel: the collectives and their buffers, and the logits
// gathers of a step whose vocabulary is split across ranks (candidate records with the whole
// rows' slices in one all-gather, and the rows the candidates did not cover afterwards).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "services/worker/backends/cuda/phi_cuda_model_internal.h"

namespace phi::worker::cuda {

CudaStatus PhiCudaModel::SetCollectives(PhiCudaCollectives* collectives) {
  PHI_CUDA_REQUIRE(collectives != nullptr && collectives_ == nullptr,
                   "SetCollectives: once, with non-null collectives");
  const size_t rows = options_.max_logit_rows, vl = config_.local_vocab();
  const size_t share = 4 * rows * vl + CandidateArea(options_.max_seqs);
  PHI_CUDA_CHECK(cudaMalloc(&logits_local_, 4 * rows * vl));
  PHI_CUDA_CHECK(cudaMalloc(&logits_gather_, share * config_.tp_world));
  PHI_CUDA_CHECK(cudaMalloc(&tp_send_, share));
  collectives_ = collectives;
  options_.use_cuda_graphs = false;
  return {};
}

PhiCudaModel::~PhiCudaModel() {
  for (auto& [b, g] : graphs_) cudaGraphExecDestroy(g);
  for (void* p : {static_cast<void*>(x_), static_cast<void*>(h_), static_cast<void*>(qkvf_),
                  static_cast<void*>(mid_), static_cast<void*>(hf_),
                  static_cast<void*>(logits_), static_cast<void*>(logits_local_),
                  static_cast<void*>(logits_gather_), static_cast<void*>(tp_send_), static_cast<void*>(attn_ws_), static_cast<void*>(attn_counters_),
                  static_cast<void*>(meta_dev_), static_cast<void*>(cand_dev_),
                  static_cast<void*>(kv_arena_), weight_arena_,
                  static_cast<void*>(lora_table_), static_cast<void*>(lora_u_)}) {
    if (p) cudaFree(p);
  }
  for (void* p : adapter_arenas_) {
    if (p) cudaFree(p);
  }
  if (meta_host_) cudaFreeHost(meta_host_);
  if (cand_host_) cudaFreeHost(cand_host_);
  gemm_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

CudaStatus PhiCudaModel::GatherCandidateStep(const Layout& L, std::span<const Run> whole_runs, int whole_rows,
                                             int n_cand, int stride, int slices, PhiStepOutput* out) {
  const PhiCudaConfig& c = config_;
  const size_t vl = c.local_vocab(), V = c.vocab_size;
  // A rank's share: its slices of the whole rows in step order, then (8-byte aligned for the
  // records' f64) its records. parallel/vocab_gather.h does the same with host buffers.
  const size_t rec_at = align_up(4 * vl * whole_rows, 16);
  const size_t rec_bytes = slices * n_cand * CandidateRecordBytes(stride);
  const size_t share = rec_at + rec_bytes;
  int packed = 0;
  for (const Run& r : whole_runs) {
    PHI_CUDA_CHECK(cudaMemcpyAsync(tp_send_ + 4 * vl * packed, logits_local_ + vl * r.first, 4 * vl * r.rows,
                                   cudaMemcpyDeviceToDevice, stream_));
    packed += r.rows;
  }
  TopCandidatesArgs ta;
  ta.logits = logits_local_;
  ta.ld = static_cast<int64_t>(vl);
  ta.width = static_cast<int>(vl);
  ta.id0 = c.vocab_begin();
  ta.vocab_limit = c.vocab_size;  // the full-row log-sum-exp, padding included
  ta.rows = reinterpret_cast<const int32_t*>(meta_dev_ + L.cand_rows);
  ta.counts = reinterpret_cast<const int32_t*>(meta_dev_ + L.cand_counts);
  ta.want_lse = reinterpret_cast<const int32_t*>(meta_dev_ + L.cand_lse);
  ta.num_rows = n_cand;
  ta.max_count = stride;
  ta.slices = slices;
  ta.out = tp_send_ + rec_at;
  PHI_CUDA_RETURN_IF_ERROR(top_candidates_forward(ta, stream_));
  PHI_CUDA_RETURN_IF_ERROR(collectives_->AllGather(tp_send_, logits_gather_, share, stream_));
  const char* recv = reinterpret_cast<const char*>(logits_gather_);
  // Whole rows first in logits_ (rank r's slice at column r * vl), then every rank's records
  // to the host, rank after rank.
  for (int r = 0; whole_rows > 0 && r < c.tp_world; ++r) {
    PHI_CUDA_CHECK(cudaMemcpy2DAsync(logits_ + r * vl, 4 * V, recv + r * share, 4 * vl, 4 * vl, whole_rows,
                                     cudaMemcpyDeviceToDevice, stream_));
  }
  PHI_CUDA_CHECK(cudaMemcpy2DAsync(cand_host_, rec_bytes, recv + rec_at, share, rec_bytes, c.tp_world,
                                   cudaMemcpyDeviceToHost, stream_));
  out->candidate_ranks = c.tp_world;  // rank-major, each rank's slices in order
  std::fill(out->logits_row.begin(), out->logits_row.end(), -1);
  packed = 0;
  for (const Run& r : whole_runs) {
    for (int k = 0; k < r.rows; ++k) out->logits_row[r.first + k] = packed++;
  }
  out->assembled_rows = whole_rows;
  return {};
}

CudaStatus PhiCudaModel::GatherLogitRows(std::span<const int32_t> step_rows, int dst_row) {
  const PhiCudaConfig& c = config_;
  PHI_CUDA_REQUIRE(collectives_ != nullptr, "GatherLogitRows: only for tensor-parallel ranks");
  const int n = static_cast<int>(step_rows.size());
  if (n == 0) return {};
  PHI_CUDA_REQUIRE(dst_row >= 0 && dst_row + n <= options_.max_logit_rows,
                   "GatherLogitRows: rows [" + std::to_string(dst_row) + ", " + std::to_string(dst_row + n) +
                       ") exceed max_logit_rows " + std::to_string(options_.max_logit_rows));
  const size_t vl = c.local_vocab(), V = c.vocab_size;
  for (int j = 0; j < n; ++j) {
    PHI_CUDA_REQUIRE(step_rows[j] >= 0 && step_rows[j] < options_.max_logit_rows,
                     "GatherLogitRows: step row " + std::to_string(step_rows[j]) + " out of range");
    PHI_CUDA_CHECK(cudaMemcpyAsync(tp_send_ + 4 * vl * j, logits_local_ + vl * step_rows[j], 4 * vl,
                                   cudaMemcpyDeviceToDevice, stream_));
  }
  PHI_CUDA_RETURN_IF_ERROR(collectives_->AllGather(tp_send_, logits_gather_, 4 * vl * n, stream_));
  const char* recv = reinterpret_cast<const char*>(logits_gather_);
  for (int r = 0; r < c.tp_world; ++r) {
    PHI_CUDA_CHECK(cudaMemcpy2DAsync(logits_ + dst_row * V + r * vl, 4 * V, recv + r * 4 * vl * n, 4 * vl, 4 * vl, n,
                                     cudaMemcpyDeviceToDevice, stream_));
  }
  PHI_CUDA_RETURN_IF_ERROR(collectives_->Synchronize(stream_));
  PHI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return {};
}

}  // namespace phi::worker::cuda
