// What phi_cuda_model.cc and phi_cuda_model_tp.cc share: the step metadata layout and the
// sizes of the candidate areas. Private to the CUDA model.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CUDA_PHI_CUDA_MODEL_INTERNAL_H_
#define PHI_SERVICES_WORKER_BACKENDS_CUDA_PHI_CUDA_MODEL_INTERNAL_H_

#include <cstddef>

#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/phi_cuda_model.h"

namespace phi::worker::cuda {

inline size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Bytes of `seqs` top-candidate records at the widest count, plus the 16 that align the record
// area after a rank's whole-row slices (its f64 log-sum-exps need 8-byte alignment).
inline size_t CandidateArea(int seqs) { return 16 + seqs * CandidateRecordBytes(kMaxTopCandidates); }

// Offsets (bytes) of one step's metadata. The layout depends only on the counts, so a decode
// graph captured for a bucket finds its arrays at the same addresses on every replay.
// n_lora_segments: the step's LoraSegments (0 without adapters; lora_max_segment_tokens is
// host-side, set by the packer).
struct PhiCudaModel::Layout {
  int n_tok = 0, n_seq = 0, n_tiles = 0, n_rows = 0, max_blocks = 0, n_lora_segments = 0;
  int lora_max_segment_tokens = 0;
  size_t tokens = 0, positions = 0, slots = 0, q_offset = 0, start_pos = 0, num_new = 0,
         context_lens = 0, tile_seq = 0, tile_first = 0, row_index = 0,
         cand_rows = 0, cand_counts = 0, cand_lse = 0, block_tables = 0, lora_segments = 0,
         end = 0;

  static Layout Make(int n_tok, int n_seq, int n_tiles, int n_rows, int max_blocks,
                     int n_lora_segments = 0) {
    Layout l;
    l.n_tok = n_tok;
    l.n_seq = n_seq;
    l.n_tiles = n_tiles;
    l.n_rows = n_rows;
    l.max_blocks = max_blocks;
    l.n_lora_segments = n_lora_segments;
    size_t o = 0;
    auto take = [&](size_t bytes) {
      const size_t at = o;
      o = align_up(o + bytes, 16);
      return at;
    };
    l.tokens = take(4 * n_tok);
    l.positions = take(4 * n_tok);
    l.slots = take(4 * n_tok);
    l.q_offset = take(4 * n_seq);
    l.start_pos = take(4 * n_seq);
    l.num_new = take(4 * n_seq);
    l.context_lens = take(4 * n_seq);
    l.tile_seq = take(4 * n_tiles);
    l.tile_first = take(4 * n_tiles);
    l.row_index = take(4 * n_rows);
    l.cand_rows = take(4 * n_seq);
    l.cand_counts = take(4 * n_seq);
    l.cand_lse = take(4 * n_seq);
    l.block_tables = take(4 * static_cast<size_t>(n_seq) * max_blocks);
    l.lora_segments = take(sizeof(LoraSegment) * static_cast<size_t>(n_lora_segments));
    l.end = o;
    return l;
  }
};

}  // namespace phi::worker::cuda

#endif  // PHI_SERVICES_WORKER_BACKENDS_CUDA_PHI_CUDA_MODEL_INTERNAL_H_
