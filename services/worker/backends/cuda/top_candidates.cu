// Top candidates of logits rows on the GPU (kernels.h: top_candidates_forward): the engine
// samples a row from its top-k and log-sum-exp (sampler.h: SampleFromCandidates), so a decode
// step copies 16 + 8 C bytes per sampled row to the host instead of 4 x 51200.
//
// One block per row, or per slice of a row (TopCandidatesArgs::slices: a few rows of 51200
// floats read by one block each would leave most SMs idle). The k-th largest value is found by radix select on an order-preserving
// integer image of the floats (three passes of 11, 11 and 10 bits; each pass histograms the
// next digit of the keys that share the digits chosen so far), so the result is exact and
// independent of the thread count. Pass 1 also takes the row's max, pass 2 the sum of
// exp(v - max) in double, the same terms as the engine's LogSumExp (only their order of
// addition differs). A fourth pass collects the k winners: every key above the k-th, and the
// lowest ids among the keys equal to it (an ordered block count), then a rank sort of those
// k <= 64 puts them in the sampler's order (value descending, lower id first).
// ref: radix select as in PyTorch's topk (aten/src/ATen/native/cuda/SortingRadixSelect.cuh);
// warp-aggregated shared atomics (__match_any_sync) because logits share their top bits.
#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <string>

#include "services/worker/backends/cuda/device_limits.h"
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBins = 2048;  // 11-bit digits

// Monotone float -> uint32 (a < b <=> key(a) < key(b) for non-NaN values), with -0.0 mapped
// to +0.0's key: the CPU compares floats, where the two zeros tie and the lower id wins.
__device__ __forceinline__ uint32_t candidate_key(float f) {
  uint32_t b = __float_as_uint(f);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Sum over the block in a fixed order (so the result does not depend on timing); every
// thread gets it. `scratch` holds 32 doubles.
__device__ double block_sum_double(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  return v;
}

__global__ void __launch_bounds__(kThreads) top_candidates_forward_kernel(TopCandidatesArgs a) {
  __shared__ uint32_t hist[kMaxBins];
  __shared__ float red_f[32];
  __shared__ double red_d[32];
  __shared__ uint32_t chosen_prefix, chosen_remaining;
  __shared__ uint32_t top_key[kMaxTopCandidates];
  __shared__ int32_t top_idx[kMaxTopCandidates];
  __shared__ int warp_eq[kWarps];
  __shared__ int count_gt;

  const int r = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // This block's slice of the row: columns [col0, col0 + slice width), ids from id0.
  const int slice_width = top_candidates_slice_width(a.width, a.slices);
  const int col0 = static_cast<int>(blockIdx.y) * slice_width;
  const int id0 = a.id0 + col0;
  const float* l = a.logits + static_cast<int64_t>(a.rows[r]) * a.ld + col0;
  const int w = max(0, min(a.vocab_limit - id0, min(slice_width, a.width - col0)));
  const int k = max(0, min(min(a.counts[r], a.max_count), w));  // a record holds max_count
  const bool want_lse = a.want_lse[r] != 0;
  char* rec = static_cast<char*>(a.out) + (static_cast<size_t>(blockIdx.y) * a.num_rows + r) *
                                              CandidateRecordBytes(a.max_count);

  // Radix select of the k-th largest key: `prefix` holds the digits chosen so far, and
  // `remaining` how many of the keys that start with them still belong to the top k.
  uint32_t prefix = 0, remaining = static_cast<uint32_t>(k);
  float row_max = -INFINITY;
  double row_sum = 0.0;
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : (pass == 1 ? 10 : 0);
    const int bits = pass == 2 ? 10 : 11;
    const int bins = 1 << bits;
    const uint32_t mask_hi = pass == 0 ? 0u : (0xffffffffu << (shift + bits));
    for (int b = tid; b < bins; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    float m = -INFINITY;
    double s = 0.0;
    // Uniform trip count over the block: __match_any_sync needs every lane.
    for (int base = 0; base < w; base += blockDim.x) {
      const int i = base + tid;
      const bool valid = i < w;
      const float v = valid ? l[i] : 0.0f;
      const uint32_t key = candidate_key(v);
      const bool in = valid && remaining > 0 && (key & mask_hi) == prefix;
      const int bin = in ? static_cast<int>((key >> shift) & (bins - 1)) : -1;
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (in && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], static_cast<uint32_t>(__popc(peers)));
      if (valid) {
        if (pass == 0) m = fmaxf(m, v);
        if (pass == 1 && want_lse) s += exp(static_cast<double>(v) - static_cast<double>(row_max));
      }
    }
    if (pass == 0) row_max = block_max(m, red_f);
    if (pass == 1 && want_lse) row_sum = block_sum_double(s, red_d);
    __syncthreads();
    if (remaining > 0 && warp == 0) {
      // Lane L owns the L-th chunk of bins counted from the top; the lane whose chunk the
      // running count crosses `remaining` in walks its bins down to the one that holds the k-th.
      const int chunk = bins / 32;
      const int hi = bins - lane * chunk;  // this lane's bins: [hi - chunk, hi)
      uint32_t t = 0;
      for (int b = hi - chunk; b < hi; ++b) t += hist[b];
      uint32_t cum = t;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, cum, o);
        if (lane >= o) cum += y;
      }
      const uint32_t before = cum - t;
      if (before < remaining && remaining <= cum) {
        uint32_t run = before;
        for (int b = hi - 1; b >= hi - chunk; --b) {
          if (run + hist[b] >= remaining) {
            chosen_prefix = prefix | (static_cast<uint32_t>(b) << shift);
            chosen_remaining = remaining - run;
            break;
          }
          run += hist[b];
        }
      }
    }
    __syncthreads();
    if (remaining > 0) {
      prefix = chosen_prefix;
      remaining = chosen_remaining;
    }
  }

  // Collect: the k - remaining keys above the k-th (any order), then the `remaining` lowest
  // ids equal to it, in id order by a block-wide count over each stride of the row.
  const uint32_t kth = prefix;
  const int need_eq = static_cast<int>(remaining), n_gt = k - need_eq;
  if (tid == 0) count_gt = 0;
  __syncthreads();
  int eq_base = 0;
  for (int base = 0; k > 0 && base < w; base += blockDim.x) {
    const int i = base + tid;
    const bool valid = i < w;
    const uint32_t key = candidate_key(valid ? l[i] : 0.0f);
    const bool gt = valid && key > kth, eq = valid && key == kth;
    if (gt) {
      const int slot = atomicAdd(&count_gt, 1);
      top_key[slot] = key;
      top_idx[slot] = i;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, eq);
    if (lane == 0) warp_eq[warp] = __popc(ballot);
    __syncthreads();
    int offset = eq_base, total = 0;
    for (int q = 0; q < kWarps; ++q) {
      const int c = warp_eq[q];
      if (q < warp) offset += c;
      total += c;
    }
    offset += __popc(ballot & ((1u << lane) - 1u));
    if (eq && offset < need_eq) {
      top_key[n_gt + offset] = key;
      top_idx[n_gt + offset] = i;
    }
    eq_base += total;
    const bool done = eq_base >= need_eq && count_gt == n_gt;
    __syncthreads();
    if (done) break;  // the same verdict in every thread: both counts are block-wide
  }
  __syncthreads();

  // Rank sort of the k winners: (key, index) pairs are distinct, so ranks are a permutation.
  CandidateRecordEntry* entries = reinterpret_cast<CandidateRecordEntry*>(rec + sizeof(CandidateRecordHeader));
  for (int j = tid; j < a.max_count; j += blockDim.x) {
    if (j < k) {
      const uint32_t kj = top_key[j];
      const int32_t ij = top_idx[j];
      int rank = 0;
      for (int q = 0; q < k; ++q) {
        rank += top_key[q] > kj || (top_key[q] == kj && top_idx[q] < ij);
      }
      entries[rank].value = l[ij];
      entries[rank].id = id0 + ij;
    } else {
      entries[j].value = 0.0f;
      entries[j].id = -1;
    }
  }
  if (tid == 0) {
    CandidateRecordHeader* head = reinterpret_cast<CandidateRecordHeader*>(rec);
    head->log_sum_exp =
        want_lse && w > 0 ? static_cast<double>(row_max) + log(row_sum) : -static_cast<double>(INFINITY);
    head->truncated = w > k ? 1u : 0u;
    head->valid = static_cast<uint32_t>(k);
  }
}

}  // namespace

CudaStatus top_candidates_forward(const TopCandidatesArgs& args, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(args.max_count >= 1 && args.max_count <= kMaxTopCandidates,
                   "top_candidates_forward: max_count must be in [1, " +
                       std::to_string(kMaxTopCandidates) + "], got " + std::to_string(args.max_count));
  PHI_CUDA_REQUIRE(args.width >= 0 && args.ld >= args.width,
                   "top_candidates_forward: need 0 <= width <= ld, got width " + std::to_string(args.width) +
                       ", ld " + std::to_string(args.ld));
  PHI_CUDA_REQUIRE(args.num_rows >= 0, "top_candidates_forward: num_rows must be >= 0");
  PHI_CUDA_REQUIRE(args.slices >= 1 && args.slices <= 65535,
                   "top_candidates_forward: slices must be in [1, 65535], got " + std::to_string(args.slices));
  if (args.num_rows == 0) return {};
  PHI_CUDA_REQUIRE(args.logits && args.rows && args.counts && args.want_lse && args.out,
                   "top_candidates_forward: logits, rows, counts, want_lse and out are required");
  PHI_CUDA_CHECK(launch_kernel(false, top_candidates_forward_kernel, dim3(args.num_rows, args.slices),
                               dim3(kThreads), 0, stream, args));
  return {};
}

int top_candidates_slices(int num_rows, int width, int max_count, int max_records) {
  if (num_rows <= 0) return 1;
  const int sms = current_sm_count();
  int s = std::min({sms / num_rows, width / kMinCandidateSliceWidth,
                    kMaxMergedCandidates / std::max(max_count, 1), max_records / num_rows});
  return std::max(s, 1);
}

}  // namespace phi::worker::cuda
