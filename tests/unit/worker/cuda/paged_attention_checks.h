// What the BF16 and FP8 KV cache attention tests share (kernels_gpu_test.cc, kv_fp8_gpu_test.cc):
// a random paged cache in either element type, and decode / prefill attention run on the GPU
// against their CPU twins on the awkward shapes (one token, lengths off the block and tile
// sizes, chunks after a cached prefix, contexts over many partitions).
#ifndef PHI_TESTS_UNIT_WORKER_CUDA_PAGED_ATTENTION_CHECKS_H_
#define PHI_TESTS_UNIT_WORKER_CUDA_PAGED_ATTENTION_CHECKS_H_

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/worker/cuda/gpu_test_util.h"

namespace phi::worker::cuda::testing {

// F32 values that are E4M3 values in the cache's units (value / scale).
inline std::vector<float> RandomFp8Values(size_t n, uint32_t seed, float scale) {
  std::vector<float> v = RandomBf16Values(n, seed, 1.0f);
  for (float& x : v) x = fp8_e4m3_round_cpu(x / scale);
  return v;
}

// A random paged cache: every sequence gets its own shuffled blocks (two spare). k and v hold
// the values the cache stores: BF16 values, or E4M3 values in the cache's units.
struct PagedKvFixture {
  int heads, block_size;
  KvCacheDtype dtype;
  float k_scale, v_scale;  // FP8 only
  int max_blocks = 1, num_blocks = 0;
  std::vector<float> k, v;
  std::vector<int32_t> tables;

  PagedKvFixture(int heads_, int block_size_, const std::vector<int>& lens, uint32_t seed,
                 KvCacheDtype dtype_ = KvCacheDtype::kBf16, float k_scale_ = 1.0f, float v_scale_ = 1.0f)
      : heads(heads_), block_size(block_size_), dtype(dtype_), k_scale(k_scale_), v_scale(v_scale_) {
    int total = 0;
    for (int l : lens) {
      max_blocks = std::max(max_blocks, (l + block_size - 1) / block_size);
      total += (l + block_size - 1) / block_size;
    }
    num_blocks = total + 2;
    std::vector<int32_t> ids(num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(lens.size() * max_blocks, -1);
    int next = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      for (int b = 0; b < (lens[s] + block_size - 1) / block_size; ++b) tables[s * max_blocks + b] = ids[next++];
    }
    const size_t n = static_cast<size_t>(num_blocks) * heads * block_size * 64;
    const bool fp8 = dtype == KvCacheDtype::kFp8E4m3;
    k = fp8 ? RandomFp8Values(n, seed + 1, k_scale) : RandomBf16Values(n, seed + 1, 1.0f);
    v = fp8 ? RandomFp8Values(n, seed + 2, v_scale) : RandomBf16Values(n, seed + 2, 1.0f);
  }

  int ElementBytes() const { return dtype == KvCacheDtype::kFp8E4m3 ? 1 : 2; }
  // The cache's bytes for `values` (k or v): BF16, or E4M3 codes.
  std::vector<uint8_t> Bytes(const std::vector<float>& values) const {
    if (dtype == KvCacheDtype::kFp8E4m3) {
      std::vector<uint8_t> c(values.size());
      for (size_t i = 0; i < values.size(); ++i) c[i] = fp8_e4m3_encode_cpu(values[i]);
      return c;
    }
    const std::vector<bf16> h = ToBf16(values);
    std::vector<uint8_t> b(h.size() * sizeof(bf16));
    std::memcpy(b.data(), h.data(), b.size());
    return b;
  }
};

// The fixture's cache on the device (K and V bytes, block tables).
class DevicePagedKv {
 public:
  explicit DevicePagedKv(const PagedKvFixture& f)
      : f_(f), k_(f.k.size() * f.ElementBytes()), v_(f.v.size() * f.ElementBytes()), tables_(f.tables.size()) {
    k_.Upload(f.Bytes(f.k));
    v_.Upload(f.Bytes(f.v));
    tables_.Upload(f.tables);
  }
  // Attention arguments naming this cache (its element type, scales, tables and shape; head
  // dim 64, softmax scale 1/8); the caller sets q, out, their strides and num_seqs.
  PagedAttentionArgs Args() const {
    PagedAttentionArgs a;
    a.k_cache = k_.get();
    a.v_cache = v_.get();
    a.kv_dtype = f_.dtype;
    a.k_scale = f_.k_scale;
    a.v_scale = f_.v_scale;
    a.block_tables = tables_.get();
    a.max_blocks_per_seq = f_.max_blocks;
    a.num_heads = f_.heads;
    a.head_dim = 64;
    a.block_size = f_.block_size;
    a.scale = 0.125f;
    return a;
  }

 private:
  const PagedKvFixture& f_;
  DeviceBuffer<uint8_t> k_, v_;
  DeviceBuffer<int32_t> tables_;
};

// Columns [0, width) of each of `rows` rows of a strided output, side by side with the twin's.
inline double RelNormErrorOfRows(const std::vector<float>& got, const std::vector<float>& want, int rows, int stride,
                                 int width, double* worst = nullptr) {
  std::vector<float> g, w;
  for (int r = 0; r < rows; ++r) {
    for (int d = 0; d < width; ++d) {
      g.push_back(got[static_cast<size_t>(r) * stride + d]);
      w.push_back(want[static_cast<size_t>(r) * stride + d]);
      if (worst) *worst = std::max(*worst, static_cast<double>(std::abs(g.back() - w.back())));
    }
  }
  return RelNormError(g, w);
}

// One decode attention case: sequences of `lens` under max_context_len max_len (0: the
// longest; larger, as a decode graph launches it, with partitions no length reaches).
struct DecodeCase {
  int heads, block_size;
  std::vector<int> lens;
  int max_len = 0;
  float k_scale = 1.0f, v_scale = 1.0f;  // FP8 only
};

// attention_decode against attention_decode_cpu within the BF16 tolerance, run twice (the
// first call must leave the merge counters at zero for the second).
inline void ExpectDecodeAttentionMatchesTwin(const DecodeCase& c, KvCacheDtype dtype) {
  SCOPED_TRACE(std::string(kv_cache_dtype_name(dtype)) + " heads=" + std::to_string(c.heads) +
               " seqs=" + std::to_string(c.lens.size()) + " max_len=" + std::to_string(c.max_len));
  const int ns = static_cast<int>(c.lens.size()), hd = c.heads * 64;
  const PagedKvFixture f(c.heads, c.block_size, c.lens, 61, dtype, c.k_scale, c.v_scale);
  const int q_stride = 3 * hd, out_stride = hd + 8;
  const std::vector<float> q = RandomBf16Values(static_cast<size_t>(ns) * q_stride, 62, 2.0f);
  DeviceBuffer<bf16> dq(q.size()), dout(static_cast<size_t>(ns) * out_stride);
  const DevicePagedKv cache(f);
  DeviceBuffer<int32_t> dl(ns);
  dq.Upload(ToBf16(q));
  dl.Upload(std::vector<int32_t>(c.lens.begin(), c.lens.end()));
  const int max_len = c.max_len > 0 ? c.max_len : *std::max_element(c.lens.begin(), c.lens.end());
  DeviceBuffer<float> ws(std::max<int64_t>(1, attention_decode_workspace_floats(ns, c.heads, max_len)));
  DeviceBuffer<unsigned int> counters(static_cast<size_t>(ns) * c.heads);
  cudaMemset(counters.get(), 0, counters.size() * sizeof(unsigned int));
  PagedAttentionArgs a = cache.Args();
  a.q = dq.get();
  a.q_stride = q_stride;
  a.out = dout.get();
  a.out_stride = out_stride;
  a.num_seqs = ns;
  for (int rep = 0; rep < 2; ++rep) {
    dout.Poison();
    PHI_ASSERT_CUDA_OK(attention_decode(a, dl.get(), max_len, ws.get(), counters.get(), nullptr));
  }
  PHI_ASSERT_CUDART(cudaDeviceSynchronize());
  for (unsigned int n : counters.Download()) ASSERT_EQ(n, 0u);
  std::vector<float> want(static_cast<size_t>(ns) * out_stride, 0.0f);
  std::vector<int32_t> lens(c.lens.begin(), c.lens.end());
  attention_decode_cpu(q.data(), q_stride, f.k.data(), f.v.data(), f.tables.data(), f.max_blocks, lens.data(),
                       want.data(), out_stride, ns, c.heads, 64, c.block_size, 0.125f, dtype, c.k_scale, c.v_scale);
  EXPECT_LT(RelNormErrorOfRows(ToF32(dout.Download()), want, ns, out_stride, hd), kTolBf16);
}

// attention_prefill (the tensor-core and the FP32-FMA kernel) against attention_prefill_cpu
// within the BF16 tolerance on chunked shapes: one token, a fresh prompt over one tile, a
// chunk continuing a cached prefix, lengths off the block and tile sizes. Prints each
// kernel's error (`attention_prefill[ fp8] (kernel): rel norm error ...`).
inline void ExpectPrefillAttentionMatchesTwin(KvCacheDtype dtype, float k_scale, float v_scale) {
  const std::vector<std::pair<int, int>> seqs = {{0, 1}, {0, 70}, {13, 5}, {100, 130}, {0, 64}, {37, 1}};
  const int heads = 3, block_size = 16, hd = heads * 64;
  std::vector<int> lens;
  for (auto [st, n] : seqs) lens.push_back(st + n);
  const PagedKvFixture f(heads, block_size, lens, 71, dtype, k_scale, v_scale);
  const int ns = static_cast<int>(seqs.size());
  std::vector<int32_t> q_off, start, num_new;
  int rows = 0;
  for (auto [st, n] : seqs) {
    q_off.push_back(rows);
    start.push_back(st);
    num_new.push_back(n);
    rows += n;
  }
  std::vector<int32_t> tile_seq, tile_first;
  prefill_tiles(num_new.data(), ns, &tile_seq, &tile_first);
  const int q_stride = 3 * hd + 8, out_stride = hd + 2;
  const std::vector<float> q = RandomBf16Values(static_cast<size_t>(rows) * q_stride, 72, 2.0f);
  DeviceBuffer<bf16> dq(q.size()), dout(static_cast<size_t>(rows) * out_stride);
  const DevicePagedKv cache(f);
  DeviceBuffer<int32_t> dqo(ns), dst(ns), dnn(ns), dts(tile_seq.size()), dtf(tile_first.size());
  dq.Upload(ToBf16(q));
  dqo.Upload(q_off);
  dst.Upload(start);
  dnn.Upload(num_new);
  dts.Upload(tile_seq);
  dtf.Upload(tile_first);
  PagedAttentionArgs a = cache.Args();
  a.q = dq.get();
  a.q_stride = q_stride;
  a.out = dout.get();
  a.out_stride = out_stride;
  a.num_seqs = ns;
  PrefillTiles t;
  t.q_offset = dqo.get();
  t.start_pos = dst.get();
  t.num_new = dnn.get();
  t.tile_seq = dts.get();
  t.tile_first = dtf.get();
  t.num_tiles = static_cast<int>(tile_seq.size());
  std::vector<float> want(static_cast<size_t>(rows) * out_stride, 0.0f);
  attention_prefill_cpu(q.data(), q_stride, f.k.data(), f.v.data(), f.tables.data(), f.max_blocks, q_off.data(),
                        start.data(), num_new.data(), want.data(), out_stride, ns, heads, 64, block_size, 0.125f, dtype,
                        k_scale, v_scale);
  for (bool tensor_cores : {true, false}) {
    SCOPED_TRACE(tensor_cores ? "mma.sync kernel" : "FP32 FMA kernel");
    a.tensor_cores = tensor_cores;
    dout.Poison();
    PHI_ASSERT_CUDA_OK(attention_prefill(a, t, nullptr));
    PHI_ASSERT_CUDART(cudaDeviceSynchronize());
    const std::vector<float> got = ToF32(dout.Download());
    double worst = 0;
    const double err = RelNormErrorOfRows(got, want, rows, out_stride, hd, &worst);
    std::printf("attention_prefill%s (%s): rel norm error %.2e, worst element %.2e\n",
                dtype == KvCacheDtype::kFp8E4m3 ? " fp8" : "", tensor_cores ? "tensor cores" : "FMA", err, worst);
    EXPECT_LT(err, kTolBf16);
    // Every output row was written (the poison is NaN).
    for (int r = 0; r < rows; ++r) {
      for (int d = 0; d < hd; ++d) ASSERT_TRUE(std::isfinite(got[static_cast<size_t>(r) * out_stride + d]));
    }
  }
}

}  // namespace phi::worker::cuda::testing

#endif  // PHI_TESTS_UNIT_WORKER_CUDA_PAGED_ATTENTION_CHECKS_H_
