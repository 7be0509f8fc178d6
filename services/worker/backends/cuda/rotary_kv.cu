// Partial rotary embedding fused with the write of K and V into the paged cache: q and k are
// read once from the fused-projection output, q is rotated in place for attention, k (rotated)
// and v go straight to their cache slots, so K never makes a second trip through memory.
// The cache holds BF16 or FP8 E4M3 (args.kv_dtype).
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/kv_elem.cuh"
#include "services/worker/backends/cuda/pdl.cuh"

namespace phi::worker::cuda {
namespace {

// T: the cache element (bf16 or fp8_e4m3, kv_elem.cuh). The BF16 instantiation is the
// kernel as it was before the FP8 option; FP8 encodes the rotated F32 value directly (one
// rounding, not a BF16 rounding first).
template <typename T>
__global__ void rotary_kv_forward_kernel(RotaryKvArgs a) {
  using E = KvElem<T>;
  pdl_wait();  // q, k, v come from the GEMV just before (programmatic launch: pdl.cuh)
  pdl_launch_dependents();
  const int t = blockIdx.x;
  const int pairs = a.head_dim / 2, half = a.rotary_dim / 2;
  const int hd = a.num_heads * a.head_dim;
  bf16* row = a.qkv + static_cast<int64_t>(t) * a.row_stride;
  const int pos = a.positions[t];
  const int slot = a.slots[t];
  const int block = slot / a.block_size, off = slot % a.block_size;
  for (int i = threadIdx.x; i < a.num_heads * pairs; i += blockDim.x) {
    const int h = i / pairs, j = i % pairs;
    bf16* q = row + h * a.head_dim;
    const bf16* k = row + hd + h * a.head_dim;
    const bf16* v = row + 2 * hd + h * a.head_dim;
    const int64_t base =
        ((static_cast<int64_t>(block) * a.num_heads + h) * a.block_size + off) * a.head_dim;
    T* kc = static_cast<T*>(a.k_cache) + base;
    T* vc = static_cast<T*>(a.v_cache) + base;
    if (j < half) {
      // As transformers: inv_freq = 1 / theta^(2j / rotary_dim) in F32, angle = pos * inv_freq.
      const float inv_freq = 1.0f / powf(a.theta, static_cast<float>(2 * j) / a.rotary_dim);
      float s, c;
      sincosf(static_cast<float>(pos) * inv_freq, &s, &c);
      const float q1 = __bfloat162float(q[j]), q2 = __bfloat162float(q[j + half]);
      q[j] = __float2bfloat16(q1 * c - q2 * s);
      q[j + half] = __float2bfloat16(q2 * c + q1 * s);
      const float k1 = __bfloat162float(k[j]), k2 = __bfloat162float(k[j + half]);
      kc[j] = E::FromFloat(k1 * c - k2 * s, a.k_scale);
      kc[j + half] = E::FromFloat(k2 * c + k1 * s, a.k_scale);
    } else {
      const int d = a.rotary_dim + 2 * (j - half);  // the pass-through dims, two per thread
      if constexpr (E::kFp8) {
        kc[d] = E::FromFloat(__bfloat162float(k[d]), a.k_scale);
        if (d + 1 < a.head_dim) kc[d + 1] = E::FromFloat(__bfloat162float(k[d + 1]), a.k_scale);
      } else {
        kc[d] = k[d];
        if (d + 1 < a.head_dim) kc[d + 1] = k[d + 1];
      }
    }
    if constexpr (E::kFp8) {
      vc[2 * j] = E::FromFloat(__bfloat162float(v[2 * j]), a.v_scale);
      vc[2 * j + 1] = E::FromFloat(__bfloat162float(v[2 * j + 1]), a.v_scale);
    } else {
      vc[2 * j] = v[2 * j];
      vc[2 * j + 1] = v[2 * j + 1];
    }
  }
}

}  // namespace

CudaStatus rotary_kv_forward(const RotaryKvArgs& args, cudaStream_t stream) {
  PHI_CUDA_REQUIRE(args.head_dim > 0 && args.head_dim % 2 == 0,
                   "rotary_kv_forward: head_dim must be even, got " + std::to_string(args.head_dim));
  PHI_CUDA_REQUIRE(args.rotary_dim >= 0 && args.rotary_dim % 2 == 0 &&
                       args.rotary_dim <= args.head_dim,
                   "rotary_kv_forward: rotary_dim must be even and <= head_dim, got " +
                       std::to_string(args.rotary_dim));
  PHI_CUDA_REQUIRE(args.block_size > 0 && args.num_heads > 0,
                   "rotary_kv_forward: block_size and num_heads must be > 0");
  PHI_CUDA_REQUIRE(args.row_stride >= 3 * args.num_heads * args.head_dim,
                   "rotary_kv_forward: row_stride must hold q, k and v");
  if (args.num_tokens == 0) return {};
  const int work = args.num_heads * args.head_dim / 2;
  const int threads = work < 1024 ? ((work + 31) / 32) * 32 : 1024;
  if (args.kv_dtype == KvCacheDtype::kFp8E4m3) {
    PHI_CUDA_REQUIRE(args.k_scale > 0.0f && args.v_scale > 0.0f,
                     "rotary_kv_forward: k_scale and v_scale must be > 0, got " +
                         std::to_string(args.k_scale) + ", " + std::to_string(args.v_scale));
    PHI_CUDA_CHECK(launch_kernel(args.pdl, rotary_kv_forward_kernel<fp8_e4m3>,
                                 dim3(args.num_tokens), dim3(threads), 0, stream, args));
  } else {
    PHI_CUDA_CHECK(launch_kernel(args.pdl, rotary_kv_forward_kernel<bf16>, dim3(args.num_tokens),
                                 dim3(threads), 0, stream, args));
  }
  return {};
}

}  // namespace phi::worker::cuda
