// Partial rotary embedding fused with the write of K and V into the paged cache: q and k are
// read once from the fused-projection output, q is rotated in place for attention, k (rotated)
// and v go straight to their cache slots, so K never makes a second trip through memory.
// The cache holds BF16 or FP8 E4M3 (args.kv_dtype).
#include "services/worker/backends/cuda/kernels.h"
#include "services/worker/backends/cuda/kv_elem.cuh"
#include "services/worker/backends/cuda/pdl.cuh"
#include "services/worker/backends/cuda/rotary_pair.cuh"

namespace phi::worker::cuda {
namespace {

// T: the cache element (bf16 or fp8_e4m3, kv_elem.cuh). The BF16 instantiation is the
// kernel as it was before the FP8 option; FP8 encodes the rotated F32 value directly (one
// rounding, not a BF16 rounding first).
template <typename T>
__global__ void rotary_kv_forward_kernel(RotaryKvArgs a) {
  pdl_wait();  // q, k, v come from the GEMV just before (programmatic launch: pdl.cuh)
  pdl_launch_dependents();
  const int t = blockIdx.x;
  const int pairs = a.head_dim / 2;
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
    rotary_pair<T>(q, k, v, kc, vc, j, a.rotary_dim, a.head_dim, pos, a.theta, a.k_scale,
                   a.v_scale, [&](int d, bf16 x, bool rotated) {
                     if (rotated) q[d] = x;  // in place; pass-through dims stay as they are
                   });
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
