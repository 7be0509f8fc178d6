// The FP8 E4M3 KV cache on the CPU side: the exact host encoder/decoder the GPU tests compare
// bytes with (against its definition and against NVIDIA's own host conversion in
// cuda_fp8.h), and the rotary/attention twins over an FP8 cache against the BF16 twins.
// Label unit: no GPU needed.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "tests/unit/worker/cuda/kernels_cpu.h"

namespace phi::worker::cuda {
namespace {

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// NVIDIA's conversion, run on the host (the software path of cuda_fp8.hpp; on sm_89+ the
// device runs cvt.rn.satfinite.e4m3x2.f32, which the GPU tests compare with the twin).
uint8_t NvEncode(float x) { return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3); }
float NvDecode(uint8_t c) { return __half2float(__half(__nv_cvt_fp8_to_halfraw(c, __NV_E4M3))); }

TEST(Fp8E4m3Cpu, AllCodesDecodeExactlyAndRoundTrip) {
  EXPECT_EQ(fp8_e4m3_decode_cpu(0x38), 1.0f);  // E 7, M 0
  EXPECT_EQ(fp8_e4m3_decode_cpu(0x7e), 448.0f);
  EXPECT_EQ(fp8_e4m3_decode_cpu(0xfe), -448.0f);
  EXPECT_EQ(fp8_e4m3_decode_cpu(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(fp8_e4m3_decode_cpu(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_decode_cpu(0x07), std::ldexp(7.0f, -9));  // largest subnormal
  EXPECT_EQ(fp8_e4m3_decode_cpu(0x3b), 1.375f);
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    SCOPED_TRACE("code " + std::to_string(c));
    const float v = fp8_e4m3_decode_cpu(static_cast<uint8_t>(c));
    const float nv = NvDecode(static_cast<uint8_t>(c));
    if ((c & 0x7f) == 0x7f) {
      ++nans;
      EXPECT_TRUE(std::isnan(v));
      EXPECT_TRUE(std::isnan(nv));
      continue;
    }
    EXPECT_EQ(v, nv);
    EXPECT_EQ(std::signbit(v), (c & 0x80) != 0);
    EXPECT_EQ(fp8_e4m3_encode_cpu(v), c);  // -0.0 included: 0x80
    EXPECT_EQ(fp8_e4m3_round_cpu(v), v);
  }
  EXPECT_EQ(nans, 2);
  // Codes are ordered like their values (sign-magnitude): the encoder is monotonic.
  for (int c = 1; c < 0x7f; ++c) {
    EXPECT_LT(fp8_e4m3_decode_cpu(static_cast<uint8_t>(c - 1)),
              fp8_e4m3_decode_cpu(static_cast<uint8_t>(c)));
  }
}

TEST(Fp8E4m3Cpu, RoundsToNearestEvenAtEveryKindOfTie) {
  struct Case { float x; float want; };
  const float s = std::ldexp(1.0f, -9);  // the subnormal step
  for (Case c : {Case{1.0625f, 1.0f},        // between M 0 and M 1: to even M 0
                 Case{1.1875f, 1.25f},       // between M 1 and M 2: to even M 2
                 Case{1.9375f, 2.0f},        // between M 7 and the next binade: carry
                 Case{-1.0625f, -1.0f},
                 Case{0.5f * s, 0.0f},       // half the smallest subnormal: to zero (even)
                 Case{1.5f * s, 2.0f * s},   // subnormal ties
                 Case{2.5f * s, 2.0f * s},
                 Case{7.5f * s, 8.0f * s},   // largest subnormal / smallest normal
                 Case{416.0f, 416.0f},       // exact
                 Case{432.0f, 448.0f}}) {    // between 416 (M 5) and 448 (M 6)
    SCOPED_TRACE(c.x);
    EXPECT_EQ(fp8_e4m3_round_cpu(c.x), c.want);
    // One F32 ulp off the tie decides it.
    const float up = std::nextafter(c.x, std::copysign(INFINITY, c.x));
    const float down = std::nextafter(c.x, 0.0f);
    EXPECT_GE(std::fabs(fp8_e4m3_round_cpu(up)), std::fabs(c.want));
    EXPECT_LE(std::fabs(fp8_e4m3_round_cpu(down)), std::fabs(c.want));
  }
  EXPECT_EQ(fp8_e4m3_round_cpu(1.0625001f), 1.125f);
  EXPECT_EQ(fp8_e4m3_round_cpu(1.0624999f), 1.0f);
}

TEST(Fp8E4m3Cpu, SaturatesFiniteAndInfiniteToMaxAndKeepsNanAndSignedZero) {
  for (float x : {448.0f, 449.0f, 463.9f, 464.0f, std::nextafter(464.0f, 1e9f), 480.0f, 1e6f,
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(x);
    EXPECT_EQ(fp8_e4m3_encode_cpu(x), 0x7e);
    EXPECT_EQ(fp8_e4m3_encode_cpu(-x), 0xfe);
  }
  EXPECT_EQ(fp8_e4m3_encode_cpu(432.1f), 0x7e);
  EXPECT_EQ(fp8_e4m3_encode_cpu(431.9f), 0x7d);  // 416
  for (uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    EXPECT_EQ(fp8_e4m3_encode_cpu(FromBits(bits)), 0x7f) << std::hex << bits;
  }
  EXPECT_EQ(fp8_e4m3_encode_cpu(0.0f), 0x00);
  EXPECT_EQ(fp8_e4m3_encode_cpu(-0.0f), 0x80);
  EXPECT_EQ(fp8_e4m3_encode_cpu(1e-40f), 0x00);  // F32 subnormal
  EXPECT_EQ(fp8_e4m3_encode_cpu(-1e-40f), 0x80);
  EXPECT_EQ(fp8_e4m3_encode_cpu(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(fp8_e4m3_encode_cpu(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  for (int k = 1; k <= 7; ++k) {  // every subnormal encodes to its step count
    EXPECT_EQ(fp8_e4m3_encode_cpu(std::ldexp(static_cast<float>(k), -9)), k);
  }
}

// The encoder against NVIDIA's host conversion (the contract the device cvt follows): every
// F32 with the low 16 bits zero (that covers every tie: a normal E4M3 tie has 19 trailing
// zero bits, a subnormal one more) and its two neighbours, and a stride through all 2^32
// patterns (NaNs, infinities and F32 subnormals included).
TEST(Fp8E4m3Cpu, EqualsNvidiaHostConversion) {
  int64_t checked = 0, mismatches = 0;
  auto check = [&](uint32_t u) {
    ++checked;
    const float x = FromBits(u);
    if (fp8_e4m3_encode_cpu(x) != NvEncode(x) && ++mismatches <= 10) {
      ADD_FAILURE() << "bits 0x" << std::hex << u << ": ours 0x" << int{fp8_e4m3_encode_cpu(x)}
                    << ", NVIDIA 0x" << int{NvEncode(x)};
    }
  };
  for (uint32_t hi = 0; hi < 65536; ++hi) {
    const uint32_t u = hi << 16;
    check(u);
    check(u + 1);
    check(u - 1);
  }
  for (uint64_t u = 12345; u < (uint64_t{1} << 32); u += 4093) check(static_cast<uint32_t>(u));
  EXPECT_EQ(mismatches, 0) << "of " << checked;
}

// The FP8 rotary twin stores round(value / scale): the BF16 twin's F32 values, divided and
// rounded, and saturated where the scale is too small for them.
TEST(RotaryKvFp8Cpu, StoresScaledRoundedValues) {
  const int tokens = 9, heads = 3, hd = heads * 64, stride = 3 * hd + 8, bs = 4;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> qkv(static_cast<size_t>(tokens) * stride);
  for (float& x : qkv) x = bf16_round_cpu(u(rng));
  std::vector<int32_t> pos(tokens), slots(tokens);
  for (int t = 0; t < tokens; ++t) {
    pos[t] = static_cast<int32_t>(rng() % 2048);
    slots[t] = (tokens - 1 - t) * 2;  // non-contiguous
  }
  const size_t cache_n = static_cast<size_t>(2 * tokens / bs + 1) * heads * bs * 64;
  for (float scale : {1.0f, 0.3f, 1.0f / 256}) {
    SCOPED_TRACE(scale);
    std::vector<float> q32 = qkv, q8 = qkv, k32(cache_n, NAN), v32(cache_n, NAN),
                       k8(cache_n, NAN), v8(cache_n, NAN);
    rotary_kv_forward_cpu(q32.data(), stride, pos.data(), slots.data(), k32.data(), v32.data(),
                          tokens, heads, 64, 32, bs, 10000.0f);
    rotary_kv_forward_cpu(q8.data(), stride, pos.data(), slots.data(), k8.data(), v8.data(),
                          tokens, heads, 64, 32, bs, 10000.0f, KvCacheDtype::kFp8E4m3, scale,
                          2 * scale);
    EXPECT_EQ(q8, q32);  // q does not depend on the cache type
    int written = 0, saturated = 0;
    for (size_t i = 0; i < cache_n; ++i) {
      if (std::isnan(k32[i])) {
        EXPECT_TRUE(std::isnan(k8[i]));
        continue;
      }
      ++written;
      EXPECT_EQ(k8[i], fp8_e4m3_round_cpu(k32[i] / scale));
      EXPECT_EQ(v8[i], fp8_e4m3_round_cpu(v32[i] / (2 * scale)));
      EXPECT_LE(std::fabs(k8[i]), 448.0f);
      saturated += std::fabs(k8[i]) == 448.0f;
    }
    EXPECT_EQ(written, tokens * hd);
    if (scale < 0.01f) {
      EXPECT_GT(saturated, written / 4);  // |k| up to ~4: many past 448 / 256 = 1.75
    } else {
      EXPECT_EQ(saturated, 0);
    }
  }
}

// Attention over an FP8 cache against the BF16 twin on the same values. Tolerance: an E4M3
// rounding moves a value by at most 2^-4 of itself (3 mantissa bits, round to nearest) and by
// about 2.4% RMS for values spread over a binade. The V error reaches the output as a
// p-weighted average of independent errors, the same relative size as the output (a weighted
// average of the values) itself; the K error shifts each score by scale * q . dk (here
// about 0.02 RMS) and so each weight by that fraction. Together about 3% relative norm; 6%
// leaves room for the draw and fails on any real fault (a scale not applied is a factor of 2
// or more, a wrong code a 100%-sized error on its position).
TEST(AttentionFp8Cpu, DecodeAndPrefillStayNearBf16) {
  const int heads = 3, bs = 16, hd = heads * 64;
  const std::vector<int> lens = {1, 17, 300, 129};
  const int ns = static_cast<int>(lens.size());
  int max_blocks = 0, total = 0;
  for (int l : lens) {
    max_blocks = std::max(max_blocks, (l + bs - 1) / bs);
    total += (l + bs - 1) / bs;
  }
  std::vector<int32_t> ids(total);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937 rng(7);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(ns) * max_blocks, -1);
  int next = 0;
  for (int s = 0; s < ns; ++s) {
    for (int b = 0; b < (lens[s] + bs - 1) / bs; ++b) tables[s * max_blocks + b] = ids[next++];
  }
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), uq(-2.0f, 2.0f);
  const size_t n = static_cast<size_t>(total) * heads * bs * 64;
  std::vector<float> k(n), v(n), q(static_cast<size_t>(ns) * hd);
  for (float& x : k) x = bf16_round_cpu(u(rng));
  for (float& x : v) x = bf16_round_cpu(u(rng));
  for (float& x : q) x = bf16_round_cpu(uq(rng));
  auto rel = [](const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      den += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(num / den);
  };
  std::vector<float> want(q.size()), got(q.size());
  attention_decode_cpu(q.data(), hd, k.data(), v.data(), tables.data(), max_blocks,
                       std::vector<int32_t>(lens.begin(), lens.end()).data(), want.data(), hd,
                       ns, heads, 64, bs, 0.125f);
  for (float scale : {1.0f, 1.0f / 64}) {
    SCOPED_TRACE(scale);
    // The cache in its units: values / scale (the twin rounds them to E4M3 on read).
    std::vector<float> ks(k), vs(v);
    for (float& x : ks) x /= scale;
    for (float& x : vs) x /= 2 * scale;
    attention_decode_cpu(q.data(), hd, ks.data(), vs.data(), tables.data(), max_blocks,
                         std::vector<int32_t>(lens.begin(), lens.end()).data(), got.data(), hd,
                         ns, heads, 64, bs, 0.125f, KvCacheDtype::kFp8E4m3, scale, 2 * scale);
    const double err = rel(got, want);
    EXPECT_LT(err, 0.06);
    EXPECT_GT(err, 1e-3);  // the cache really was rounded to 3 mantissa bits
    std::printf("decode fp8 vs bf16 (scale %g): relative norm error %.4f\n", scale, err);

    // Prefill: every sequence's last chunk of up to 40 queries.
    std::vector<int32_t> q_off, start, num_new;
    int rows = 0;
    for (int l : lens) {
      const int nn = std::min(l, 40);
      q_off.push_back(rows);
      start.push_back(l - nn);
      num_new.push_back(nn);
      rows += nn;
    }
    std::vector<float> pq(static_cast<size_t>(rows) * hd);
    for (float& x : pq) x = bf16_round_cpu(uq(rng));
    std::vector<float> pw(pq.size()), pg(pq.size());
    attention_prefill_cpu(pq.data(), hd, k.data(), v.data(), tables.data(), max_blocks,
                          q_off.data(), start.data(), num_new.data(), pw.data(), hd, ns, heads,
                          64, bs, 0.125f);
    attention_prefill_cpu(pq.data(), hd, ks.data(), vs.data(), tables.data(), max_blocks,
                          q_off.data(), start.data(), num_new.data(), pg.data(), hd, ns, heads,
                          64, bs, 0.125f, KvCacheDtype::kFp8E4m3, scale, 2 * scale);
    const double perr = rel(pg, pw);
    EXPECT_LT(perr, 0.06);
    EXPECT_GT(perr, 1e-3);
    std::printf("prefill fp8 vs bf16 (scale %g): relative norm error %.4f\n", scale, perr);
  }
  // The BF16 path ignores the scales (they are an FP8 notion).
  std::vector<float> again(q.size());
  attention_decode_cpu(q.data(), hd, k.data(), v.data(), tables.data(), max_blocks,
                       std::vector<int32_t>(lens.begin(), lens.end()).data(), again.data(), hd,
                       ns, heads, 64, bs, 0.125f, KvCacheDtype::kBf16, 0.5f, 0.25f);
  EXPECT_EQ(again, want);
}

// A tiny random Phi (the GPU model test's shape and weight distribution: FillRandomWeights'
// uniform(-0.08, 0.08), LayerNorm weights 1) run densely through the twins with BF16-rounded
// activations, once with a BF16 cache and once with an FP8 one. The logits' relative error is
// what kv_fp8_gpu_test's model test allows (with margin): this measures it without a GPU.
struct TinyPhi {
  int vocab = 300, h = 128, inter = 256, layers = 2, heads = 2, rot = 32;
  int qkv() const { return 3 * heads * 64; }
  int w1_rows() const { return qkv() + inter; }
  int w2_cols() const { return heads * 64 + inter; }
  std::vector<float> embed, lm_w, lm_b, fln_w, fln_b;
  struct Layer { std::vector<float> ln_w, ln_b, w1, b1, w2, b2; };
  std::vector<Layer> ls;
  explicit TinyPhi(uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-0.08f, 0.08f);
    auto rnd = [&](size_t n) {
      std::vector<float> v(n);
      for (float& x : v) x = bf16_round_cpu(u(rng));
      return v;
    };
    embed = rnd(static_cast<size_t>(vocab) * h);
    for (int l = 0; l < layers; ++l) {
      ls.push_back({std::vector<float>(h, 1.0f), rnd(h), rnd(static_cast<size_t>(w1_rows()) * h),
                    rnd(w1_rows()), rnd(static_cast<size_t>(h) * w2_cols()), rnd(h)});
    }
    fln_w.assign(h, 1.0f);
    fln_b = rnd(h);
    lm_w = rnd(static_cast<size_t>(vocab) * h);
    lm_b = rnd(vocab);
  }
  std::vector<float> Forward(const std::vector<int32_t>& tokens, KvCacheDtype dt) const {
    const int n = static_cast<int>(tokens.size());
    std::vector<float> x(static_cast<size_t>(n) * h);
    embedding_forward_cpu(tokens.data(), embed.data(), x.data(), n, vocab, h);
    std::vector<float> kc(static_cast<size_t>(heads) * n * 64), vc(kc.size());
    std::vector<int32_t> pos(n), slots(n);
    std::iota(pos.begin(), pos.end(), 0);
    std::iota(slots.begin(), slots.end(), 0);
    const int32_t table[] = {0}, q_off[] = {0}, st[] = {0}, nn[] = {n};
    auto round = [](std::vector<float>& v) {
      for (float& e : v) e = bf16_round_cpu(e);
    };
    for (const Layer& l : ls) {
      std::vector<float> hn(x.size()), f(static_cast<size_t>(n) * w1_rows()),
          mid(static_cast<size_t>(n) * w2_cols());
      layernorm_forward_cpu(x.data(), nullptr, l.ln_w.data(), l.ln_b.data(), hn.data(), n, h,
                            1e-5f);
      round(hn);
      gemm_bias_cpu(hn.data(), l.w1.data(), l.b1.data(), f.data(), 0.0f, n, w1_rows(), h);
      round(f);
      rotary_kv_forward_cpu(f.data(), w1_rows(), pos.data(), slots.data(), kc.data(), vc.data(),
                            n, heads, 64, rot, n, 10000.0f, dt);
      round(f);
      if (dt == KvCacheDtype::kBf16) round(kc);
      attention_prefill_cpu(f.data(), w1_rows(), kc.data(), vc.data(), table, 1, q_off, st, nn,
                            mid.data(), w2_cols(), 1, heads, 64, n, 0.125f, dt);
      gelu_forward_cpu(f.data() + qkv(), w1_rows(), mid.data() + heads * 64, w2_cols(), n, inter);
      round(mid);
      gemm_bias_cpu(mid.data(), l.w2.data(), l.b2.data(), x.data(), 1.0f, n, h, w2_cols());
    }
    std::vector<float> hf(x.size()), logits(static_cast<size_t>(n) * vocab);
    layernorm_forward_cpu(x.data(), nullptr, fln_w.data(), fln_b.data(), hf.data(), n, h, 1e-5f);
    round(hf);
    gemm_bias_cpu(hf.data(), lm_w.data(), lm_b.data(), logits.data(), 0.0f, n, vocab, h);
    return logits;
  }
};

TEST(KvFp8TwinModel, TinyPhiLogitsNearBf16Cache) {
  const TinyPhi m(1234);
  std::mt19937 rng(3);
  std::vector<int32_t> tokens(200);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 300);
  const std::vector<float> a = m.Forward(tokens, KvCacheDtype::kBf16);
  const std::vector<float> b = m.Forward(tokens, KvCacheDtype::kFp8E4m3);
  double num = 0, den = 0, worst_row = 0;
  int argmax_differs = 0;
  for (int r = 0; r < 200; ++r) {
    double rn = 0, rd = 0;
    int ia = 0, ib = 0;
    for (int j = 0; j < 300; ++j) {
      const size_t i = static_cast<size_t>(r) * 300 + j;
      rn += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      rd += static_cast<double>(a[i]) * a[i];
      if (a[i] > a[static_cast<size_t>(r) * 300 + ia]) ia = j;
      if (b[i] > b[static_cast<size_t>(r) * 300 + ib]) ib = j;
    }
    num += rn;
    den += rd;
    worst_row = std::max(worst_row, std::sqrt(rn / rd));
    argmax_differs += ia != ib;
    if (ia != ib) {  // a near-tie only: the BF16 top-2 margin under 5% of the logits' RMS
      double rms = 0, second = -1e30;
      for (int j = 0; j < 300; ++j) {
        const double v = a[static_cast<size_t>(r) * 300 + j];
        rms += v * v;
        if (j != ia) second = std::max(second, v);
      }
      EXPECT_LT(a[static_cast<size_t>(r) * 300 + ia] - second, 0.05 * std::sqrt(rms / 300))
          << "position " << r;
    }
  }
  const double err = std::sqrt(num / den);
  std::printf("tiny Phi, 200 positions: fp8 vs bf16 KV logits relative norm error %.5f (worst "
              "row %.5f), argmax differs at %d positions\n", err, worst_row, argmax_differs);
  // Measured here: 0.008 overall, 0.027 at position 0 (one position to attend to: its V's
  // rounding reaches the output unaveraged); argmax differs at 2 of 200 positions, both with
  // BF16 margins under 0.004 (logit RMS ~0.53). kv_fp8_gpu_test allows the same bounds.
  EXPECT_GT(err, 1e-4);
  EXPECT_LT(err, 0.02);
  EXPECT_LT(worst_row, 0.05);
  EXPECT_LE(argmax_differs, 10);
}

}  // namespace
}  // namespace phi::worker::cuda
