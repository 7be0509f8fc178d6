#include "tests/unit/worker/cuda/kernels_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>


namespace phi::worker::cuda {

float bf16_round_cpu(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

uint8_t fp8_e4m3_encode_cpu(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 31) << 7);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7f;        // NaN, sign dropped
  if (a == 0x7f800000u) return sign | 0x7e;  // infinity saturates
  const int fe = static_cast<int>(a >> 23) - 127;  // F32 subnormals: far below 2^-10
  if (fe < -6) {
    // Below the smallest normal 2^-6 the grid is uniform, step 2^-9: the code is the number
    // of steps (code 8, one past the largest subnormal, is 2^-6 itself). |x| * 2^9 is exact.
    const double y = std::fabs(static_cast<double>(x)) * 512.0;
    double n = std::floor(y);
    const double frac = y - n;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(n, 2.0) != 0.0)) n += 1.0;
    return sign | static_cast<uint8_t>(n);
  }
  // Normal: keep the implicit bit and 3 mantissa bits of the 24-bit significand, round the
  // other 20 to nearest even.
  uint32_t q = ((a & 0x7fffffu) | 0x800000u) >> 20;  // 8 .. 15
  const uint32_t rem = a & 0xfffffu, half = 0x80000u;
  if (rem > half || (rem == half && (q & 1u))) ++q;
  int e = fe + 7;
  if (q == 16) {
    q = 8;
    ++e;
  }
  // Past 448 (E 15, mantissa 7 is NaN; E > 15 does not exist): saturate. 448 < |x| <= 464
  // rounded to 448 above; beyond, the rounding reached mantissa 7 or E 16.
  if (e > 15 || (e == 15 && q == 15)) return sign | 0x7e;
  return sign | static_cast<uint8_t>((e << 3) | (q - 8));
}

float fp8_e4m3_decode_cpu(uint8_t code) {
  const int e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<float>::quiet_NaN();
  const float mag = e == 0 ? std::ldexp(static_cast<float>(m), -9)
                           : std::ldexp(static_cast<float>(8 + m), e - 10);
  return (code & 0x80) ? -mag : mag;
}

float fp8_e4m3_round_cpu(float x) { return fp8_e4m3_decode_cpu(fp8_e4m3_encode_cpu(x)); }

void layernorm_forward_cpu(const float* x, const int32_t* row_index, const float* gamma,
                           const float* beta, float* out, int rows, int dim, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(row_index ? row_index[r] : r) * dim;
    double mean = 0;
    for (int c = 0; c < dim; ++c) mean += xr[c];
    mean /= dim;
    double var = 0;
    for (int c = 0; c < dim; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    var /= dim;
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int c = 0; c < dim; ++c) {
      out[static_cast<int64_t>(r) * dim + c] =
          static_cast<float>((xr[c] - mean) * rstd * gamma[c] + beta[c]);
    }
  }
}

void embedding_forward_cpu(const int32_t* tokens, const float* table, float* x, int num_tokens,
                           int vocab, int dim, int vocab_begin) {
  for (int t = 0; t < num_tokens; ++t) {
    const int64_t row = static_cast<int64_t>(tokens[t]) - vocab_begin;
    const bool valid = row >= 0 && row < vocab;
    for (int c = 0; c < dim; ++c) {
      x[static_cast<int64_t>(t) * dim + c] = valid ? table[row * dim + c] : 0.0f;
    }
  }
}

void rotary_kv_forward_cpu(float* qkv, int row_stride, const int32_t* positions,
                           const int32_t* slots, float* k_cache, float* v_cache, int num_tokens,
                           int num_heads, int head_dim, int rotary_dim, int block_size,
                           float theta, KvCacheDtype kv_dtype, float k_scale, float v_scale) {
  const bool fp8 = kv_dtype == KvCacheDtype::kFp8E4m3;
  const int half = rotary_dim / 2;
  const int hd = num_heads * head_dim;
  for (int t = 0; t < num_tokens; ++t) {
    float* row = qkv + static_cast<int64_t>(t) * row_stride;
    const int block = slots[t] / block_size, off = slots[t] % block_size;
    for (int h = 0; h < num_heads; ++h) {
      float* q = row + h * head_dim;
      float* k = row + hd + h * head_dim;
      const float* v = row + 2 * hd + h * head_dim;
      for (int i = 0; i < half; ++i) {
        // As transformers' PhiRotaryEmbedding: inv_freq in F32, angle = pos * inv_freq.
        const float inv_freq =
            1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rotary_dim));
        const float angle = static_cast<float>(positions[t]) * inv_freq;
        const float c = std::cos(angle), s = std::sin(angle);
        for (float* p : {q, k}) {
          const float x1 = p[i], x2 = p[i + half];
          p[i] = x1 * c - x2 * s;
          p[i + half] = x2 * c + x1 * s;
        }
      }
      const int64_t base =
          ((static_cast<int64_t>(block) * num_heads + h) * block_size + off) * head_dim;
      for (int d = 0; d < head_dim; ++d) {
        k_cache[base + d] = fp8 ? fp8_e4m3_round_cpu(k[d] / k_scale) : k[d];
        v_cache[base + d] = fp8 ? fp8_e4m3_round_cpu(v[d] / v_scale) : v[d];
      }
    }
  }
}

float gelu_new_scalar_cpu(float x) {
  const double xd = x;
  return static_cast<float>(
      0.5 * xd * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (xd + 0.044715 * xd * xd * xd))));
}

void gelu_forward_cpu(const float* in, int in_stride, float* out, int out_stride, int rows,
                      int cols) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      out[static_cast<int64_t>(r) * out_stride + c] =
          gelu_new_scalar_cpu(in[static_cast<int64_t>(r) * in_stride + c]);
    }
  }
}

namespace {

// How the twins read a cache element (see kernels_cpu.h): FP8 caches as their E4M3 value,
// the scale applied to the dot product (K) and the output (V) as the kernels fold it.
struct CacheRead {
  bool fp8 = false;
  float k_scale = 1.0f, v_scale = 1.0f;
  double operator()(float x) const { return fp8 ? fp8_e4m3_round_cpu(x) : x; }
};

// One query against cache positions [0, len) of one sequence and head.
void attend_one(const float* q, const float* k_cache, const float* v_cache, const int32_t* table,
                int len, int h, int num_heads, int head_dim, int block_size, float scale,
                const CacheRead& rd, float* out) {
  std::vector<double> s(len);
  double mx = -std::numeric_limits<double>::infinity();
  auto at = [&](const float* cache, int j) {
    const int64_t block = table[j / block_size];
    return cache + ((block * num_heads + h) * block_size + j % block_size) * head_dim;
  };
  for (int j = 0; j < len; ++j) {
    const float* k = at(k_cache, j);
    double dot = 0;
    for (int d = 0; d < head_dim; ++d) dot += static_cast<double>(q[d]) * rd(k[d]);
    s[j] = dot * scale;
    if (rd.fp8) s[j] *= rd.k_scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (int j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - mx));
  for (int d = 0; d < head_dim; ++d) {
    double acc = 0;
    for (int j = 0; j < len; ++j) acc += s[j] * rd(at(v_cache, j)[d]);
    out[d] = static_cast<float>(rd.fp8 ? acc / sum * rd.v_scale : acc / sum);
  }
}

}  // namespace

void attention_decode_cpu(const float* q, int q_stride, const float* k_cache,
                          const float* v_cache, const int32_t* block_tables,
                          int max_blocks_per_seq, const int32_t* context_lens, float* out,
                          int out_stride, int num_seqs, int num_heads, int head_dim,
                          int block_size, float scale, KvCacheDtype kv_dtype, float k_scale,
                          float v_scale) {
  const CacheRead rd{kv_dtype == KvCacheDtype::kFp8E4m3, k_scale, v_scale};
  for (int s = 0; s < num_seqs; ++s) {
    for (int h = 0; h < num_heads; ++h) {
      attend_one(q + static_cast<int64_t>(s) * q_stride + h * head_dim, k_cache, v_cache,
                 block_tables + static_cast<int64_t>(s) * max_blocks_per_seq, context_lens[s],
                 h, num_heads, head_dim, block_size, scale, rd,
                 out + static_cast<int64_t>(s) * out_stride + h * head_dim);
    }
  }
}

void attention_prefill_cpu(const float* q, int q_stride, const float* k_cache,
                           const float* v_cache, const int32_t* block_tables,
                           int max_blocks_per_seq, const int32_t* q_offset,
                           const int32_t* start_pos, const int32_t* num_new, float* out,
                           int out_stride, int num_seqs, int num_heads, int head_dim,
                           int block_size, float scale, KvCacheDtype kv_dtype, float k_scale,
                           float v_scale) {
  const CacheRead rd{kv_dtype == KvCacheDtype::kFp8E4m3, k_scale, v_scale};
  for (int s = 0; s < num_seqs; ++s) {
    for (int i = 0; i < num_new[s]; ++i) {
      const int64_t row = q_offset[s] + i;
      for (int h = 0; h < num_heads; ++h) {
        attend_one(q + row * q_stride + h * head_dim, k_cache, v_cache,
                   block_tables + static_cast<int64_t>(s) * max_blocks_per_seq,
                   start_pos[s] + i + 1, h, num_heads, head_dim, block_size, scale, rd,
                   out + row * out_stride + h * head_dim);
      }
    }
  }
}

void top_candidates_forward_cpu(const float* logits, int64_t ld, int width, int id0, int vocab_limit,
                                const int32_t* rows, const int32_t* counts, const int32_t* want_lse,
                                int num_rows, int max_count, void* out) {
  const size_t record = CandidateRecordBytes(max_count);
  for (int r = 0; r < num_rows; ++r) {
    const float* l = logits + static_cast<int64_t>(rows[r]) * ld;
    const int w = std::clamp(vocab_limit - id0, 0, width);
    const int k = std::max(0, std::min({counts[r], max_count, w}));
    double lse = -std::numeric_limits<double>::infinity();
    if (want_lse[r] != 0 && w > 0) {
      float max = -std::numeric_limits<float>::infinity();
      for (int i = 0; i < w; ++i) max = std::max(max, l[i]);
      double sum = 0.0;
      for (int i = 0; i < w; ++i) sum += std::exp(static_cast<double>(l[i]) - max);
      lse = max + std::log(sum);
    }
    std::vector<int32_t> ids(w);
    for (int i = 0; i < w; ++i) ids[i] = i;
    // Value descending, lower id first on ties (-0.0 == +0.0 as float comparison says).
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                      [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    char* p = static_cast<char*>(out) + r * record;
    const CandidateRecordHeader head{lse, w > k ? 1u : 0u, static_cast<uint32_t>(k)};
    std::memcpy(p, &head, sizeof(head));
    for (int j = 0; j < max_count; ++j) {
      const CandidateRecordEntry e{j < k ? l[ids[j]] : 0.0f, j < k ? id0 + ids[j] : -1};
      std::memcpy(p + sizeof(head) + sizeof(e) * j, &e, sizeof(e));
    }
  }
}

void gemm_bias_cpu(const float* a, const float* w, const float* bias, float* d, float beta,
                   int m, int n, int k) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double acc = bias ? bias[j] : 0.0;
      for (int kk = 0; kk < k; ++kk) {
        acc += static_cast<double>(a[static_cast<int64_t>(i) * k + kk]) *
               w[static_cast<int64_t>(j) * k + kk];
      }
      float& out = d[static_cast<int64_t>(i) * n + j];
      out = static_cast<float>(acc + (beta != 0.0f ? beta * out : 0.0f));
    }
  }
}

}  // namespace phi::worker::cuda
