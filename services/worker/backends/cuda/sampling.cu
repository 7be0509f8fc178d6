// Sampling on the GPU: one block per row of logits, so only the chosen ids and the logprobs
// asked for leave the device. Filters are thresholds on the temperature-scaled logit z:
// top-k and top-p thresholds are found by binary search over the order-preserving integer
// image of z (32 passes over the row each, no sort), which gives the exact k-th value and the
// exact nucleus boundary. The draw is an inverse-CDF walk in index order over per-thread chunks
// with a deterministic block scan.
#include <cfloat>
#include <cstdint>

#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/philox.h"
#include "services/worker/backends/cuda/reduce.cuh"

namespace phi::worker::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kMaxTopN = 64;

// Monotone map float -> uint32 (a < b  <=>  key(a) < key(b) for non-NaN values).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct ArgMax {
  float v;
  int i;
};

__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (b.v > a.v || (b.v == a.v && b.i >= 0 && (a.i < 0 || b.i < a.i))) return b;
  return a;
}

__device__ ArgMax block_argmax(ArgMax x, float* sv, int* si) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax y{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.i, o)};
    x = better(x, y);
  }
  if (lane == 0) {
    sv[warp] = x.v;
    si[warp] = x.i;
  }
  __syncthreads();
  x = lane < (blockDim.x >> 5) ? ArgMax{sv[lane], si[lane]} : ArgMax{-INFINITY, -1};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax y{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.i, o)};
    x = better(x, y);
  }
  __syncthreads();
  return x;
}

// The first pass's step for logit v of id i: the running argmax and the sum of exp(v - max),
// rescaled whenever the max grows.
__device__ __forceinline__ void visit_logit(float v, int i, ArgMax& best, float& s0) {
  if (v > best.v) {
    s0 = s0 * __expf(best.v - v) + 1.0f;
    best = ArgMax{v, i};
  } else if (best.v > -INFINITY) {  // -inf logits add nothing
    s0 += __expf(v - best.v);
  }
}

// Inclusive scan over the block in a fixed order (warp shuffles, then warp totals).
__device__ float block_inclusive_scan(float v, float* warp_tot) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += y;
  }
  if (lane == 31) warp_tot[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < (blockDim.x >> 5) ? warp_tot[lane] : 0.0f;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(0xffffffffu, t, o);
      if (lane >= o) t += y;
    }
    warp_tot[lane] = t;  // inclusive totals of warps
  }
  __syncthreads();
  const float r = v + (warp > 0 ? warp_tot[warp - 1] : 0.0f);
  __syncthreads();
  return r;
}

// (kThreads, 1): without a minimum ptxas budgets 32 registers (two blocks per SM) and spills
// the first pass's four loads in flight; with it, 43 registers and no spill (sm_90).
__global__ void __launch_bounds__(kThreads, 1) sample_forward_kernel(SampleArgs a) {
  __shared__ float red[32];
  __shared__ int redi[32];
  __shared__ int chosen_s;
  __shared__ float total_s;
  __shared__ int top_s[kMaxTopN];
  const int r = blockIdx.x;
  const float* l = a.logits + static_cast<int64_t>(a.row_index ? a.row_index[r] : r) * a.vocab;
  const SamplingParams p = a.params[r];
  const int n = min(a.vocab, a.vocab_limit);

  // One pass: argmax and an online sum of exp (rescaled whenever the running max grows).
  // 16-byte loads, several in flight per thread: one block reads the whole row, so its
  // bytes in flight, not the memory bandwidth, set the pass's time. Each thread visits its
  // ids in increasing order (the float4 body, then the tail), so a tie keeps the lower id.
  ArgMax best{-INFINITY, -1};
  float s0 = 0.0f;
  const int n4 = reinterpret_cast<uintptr_t>(l) % 16 == 0 ? n / 4 : 0;
  const float4* l4 = reinterpret_cast<const float4*>(l);
#pragma unroll 4
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    const float4 v = l4[i];
    visit_logit(v.x, 4 * i, best, s0);
    visit_logit(v.y, 4 * i + 1, best, s0);
    visit_logit(v.z, 4 * i + 2, best, s0);
    visit_logit(v.w, 4 * i + 3, best, s0);
  }
  for (int i = 4 * n4 + threadIdx.x; i < n; i += blockDim.x) visit_logit(l[i], i, best, s0);
  const float my_max = best.v;
  best = block_argmax(best, red, redi);
  const float m0 = best.v;
  const float lse0 = m0 + logf(block_sum(my_max == -INFINITY ? 0.0f : s0 * __expf(my_max - m0), red));

  int tok = best.i;
  if (p.temperature > 0.0f) {
    const float t = p.temperature;
    const float zmax = m0 / t;
    const uint32_t key_max = order_key(zmax);
    uint32_t thr = 0;  // keep z with order_key(z) >= thr
    if (p.top_k > 0 && p.top_k < n) {
      // Largest key with count(key(z) >= key) >= top_k: the k-th largest z.
      uint32_t lo = 0, hi = key_max;
      while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        float c = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) c += order_key(l[i] / t) >= mid;
        if (block_sum(c, red) >= static_cast<float>(p.top_k)) lo = mid; else hi = mid - 1;
      }
      thr = lo;
    }
    if (p.top_p < 1.0f) {
      float mass = 0.0f;
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float z = l[i] / t;
        if (order_key(z) >= thr) mass += __expf(z - zmax);
      }
      const float target = p.top_p * block_sum(mass, red);
      uint32_t lo = thr, hi = key_max;
      while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        float c = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
          const float z = l[i] / t;
          if (order_key(z) >= mid) c += __expf(z - zmax);
        }
        if (block_sum(c, red) >= target) lo = mid; else hi = mid - 1;
      }
      thr = lo;
    }
    if (p.min_p > 0.0f) thr = max(thr, order_key(zmax + logf(p.min_p)));

    // Inverse CDF in index order over contiguous per-thread chunks.
    const int chunk = (n + blockDim.x - 1) / blockDim.x;
    const int c0 = min(n, static_cast<int>(threadIdx.x) * chunk), c1 = min(n, c0 + chunk);
    float csum = 0.0f;
    for (int i = c0; i < c1; ++i) {
      const float z = l[i] / t;
      if (order_key(z) >= thr) csum += __expf(z - zmax);
    }
    const float incl = block_inclusive_scan(csum, red);
    if (threadIdx.x == blockDim.x - 1) total_s = incl;
    __syncthreads();
    const float excl = incl - csum;
    const float target = philox_uniform(p.seed, p.step) * total_s;
    // The owner is the last non-empty chunk that starts at or before the target: unique by
    // construction, whatever the rounding of the chunk boundaries (the first non-empty chunk
    // starts at exactly 0, so there always is one).
    const float owner_id = block_max(
        csum > 0.0f && excl <= target ? static_cast<float>(threadIdx.x) : -1.0f, red);
    const bool owner = static_cast<float>(threadIdx.x) == owner_id;
    if (threadIdx.x == 0) chosen_s = best.i;
    __syncthreads();
    if (owner) {
      const float rest = target - excl;
      float run = 0.0f;
      int pick = -1, last = -1;
      for (int i = c0; i < c1; ++i) {
        const float z = l[i] / t;
        if (order_key(z) < thr) continue;
        last = i;
        run += __expf(z - zmax);
        if (run > rest) {
          pick = i;
          break;
        }
      }
      chosen_s = pick >= 0 ? pick : last;
    }
    __syncthreads();
    tok = chosen_s;
  }
  if (threadIdx.x == 0) {
    a.out_token[r] = tok;
    a.out_logprob[r] = l[tok] - lse0;
  }
  if (a.max_top_n > 0) {
    const int want = min(min(p.num_top_logprobs, a.max_top_n), min(n, kMaxTopN));
    for (int j = 0; j < want; ++j) {
      ArgMax b{-INFINITY, -1};
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        bool taken = false;
        for (int q = 0; q < j; ++q) taken |= (top_s[q] == i);
        if (!taken) b = better(b, ArgMax{l[i], i});
      }
      b = block_argmax(b, red, redi);
      if (threadIdx.x == 0) {
        top_s[j] = b.i;
        const int64_t o = static_cast<int64_t>(r) * a.max_top_n + j;
        a.out_top_ids[o] = b.i;
        a.out_top_logprobs[o] = l[b.i] - lse0;
      }
      __syncthreads();
    }
    for (int j = want + threadIdx.x; j < a.max_top_n; j += blockDim.x) {
      const int64_t o = static_cast<int64_t>(r) * a.max_top_n + j;
      a.out_top_ids[o] = -1;
      a.out_top_logprobs[o] = -INFINITY;
    }
  }
}

}  // namespace

CudaStatus sample_forward(const SampleArgs& args, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(args.vocab > 0 && args.vocab_limit > 0,
                   "sample_forward: vocab and vocab_limit must be > 0");
  PHI_CUDA_REQUIRE(args.max_top_n >= 0 && args.max_top_n <= kMaxTopN,
                   "sample_forward: max_top_n must be in [0, " + std::to_string(kMaxTopN) + "]");
  PHI_CUDA_REQUIRE(args.max_top_n == 0 || (args.out_top_ids && args.out_top_logprobs),
                   "sample_forward: top-N outputs required when max_top_n > 0");
  if (args.rows == 0) return {};
  PHI_CUDA_CHECK(launch_kernel(false, sample_forward_kernel, dim3(args.rows), dim3(kThreads), 0,
                               stream, args));
  return {};
}

}  // namespace phi::worker::cuda
