// Matrix-multiply kernels over panel-packed weights (see PackedMatrix):
// y[m, n] (+)= sum_k x[m, k] * w[n, k] + bias[n] for the output features of panels [p0, p1).
//
// The arithmetic is a contract shared by every kernel of one path, so that results do not
// depend on the batch: for each output, K is cut into blocks of kKBlock; within a block
// the products x[k] * w[k] (w widened to F32: BF16 exactly, INT8 as the integer q) are
// accumulated in order k = kb, kb+1, ... into an F32 sum starting at 0; an INT8 block's
// sum is then multiplied by the block's scale; the first block's result gets the bias
// added (if any), then the old y (if accumulating); every later block's is added to y.
// The AVX2 and AVX-512 kernels use one FMA per product, so they agree bit for bit; the
// portable kernels round the product and the sum separately.
//
// The avx512bf16 path's BF16-weight GEMM (matmul_bf16dot_avx512bf16) has a contract of its
// own, because vdpbf16ps multiplies BF16 by BF16:
// - every activation is rounded to BF16 first (round to nearest even, as vcvtne2ps2bf16:
//   denormals flush to 0, NaN stays NaN), the same way whatever M is;
// - K is cut into the same blocks of kKBlock (even), and within a block into pairs
//   (k, k+1), k = kb, kb+2, ...; where K is odd, the last pair is (K-1, none): a 0
//   activation times a 0 weight, the weight line past K never read;
// - per output, each pair is one vdpbf16ps into the block's F32 sum (starting at 0), pairs
//   in k order; the instruction defines the pair's arithmetic (Intel SDM: two F32 FMAs,
//   k+1's product first, then k's, round to nearest even, denormal inputs and outputs
//   flushed to 0; the BF16 x BF16 products are exact in F32). That the host's vdpbf16ps
//   rounds a pair this way is the SDM's word, not something the tests rely on;
// - then the same fold as above: first block + bias (if any), + old y (if accumulating);
//   later blocks added to y.
// So this path is batch-invariant on its own (a row's result never depends on M or on the
// other rows), but it does not equal the F32-FMA paths' results: it is held to a double
// reference on the BF16-rounded activations (matmul_test) and to transformers within the
// BF16 tolerance (phi_cpu_oracle_test). Its F32 and INT8 GEMMs are the AVX-512 kernels.
//
// These declarations use only plain types: the SIMD kernels are compiled with -mavx*
// flags, and an inline function shared with other files could otherwise be emitted with
// those instructions and picked by the linker for machines without them.
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_KERNELS_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_KERNELS_H_

#include <cstdint>

namespace phi::worker::cpu::kernels {

constexpr int64_t kPanel = 32;     // output features per panel
constexpr int64_t kKBlock = 1024;  // K block of the arithmetic contract (and INT8's scale group)
// Activation rows per band, the register tile height of each path's prefill kernel:
// AVX-512 14 rows x 32 outputs (28 of 32 zmm), AVX2 6 rows x 16 outputs (12 of 16 ymm).
constexpr int64_t kBandRowsAvx512 = 14;
constexpr int64_t kBandRowsAvx2 = 6;

// Where column j (0..31) of a panel sits inside its 32-element BF16 line: the order in
// which AVX-512's unpack-low/high of 16-bit words with zero yield columns 0..15 and
// 16..31 as F32 (4 words of each 128-bit lane per unpack). AVX2 unpacks each 32-byte
// half of the line: half h gives columns 8h..8h+7 (low) and 16+8h..16+8h+7 (high).
// F32 and INT8 lines are in column order.
constexpr int Bf16LaneOf(int j) { return 8 * ((j % 16) / 4) + (j % 4) + (j >= 16 ? 4 : 0); }

struct MatMulArgs {
  const float* x = nullptr;  // M rows, stride ldx floats
  int64_t m = 0;
  int64_t ldx = 0;
  // The same activations in bands of band_rows rows, [band][k][band_rows] (SIMD kernels):
  // a tile then reads one contiguous stream instead of rows 4-8 KB apart, which at K =
  // 1024 or 2048 all fall into the same L1 set.
  const float* x_bands = nullptr;
  int64_t band_rows = 0;
  // matmul_bf16dot_avx512bf16 only: the activations rounded to BF16 and paired, in bands of
  // band_rows rows, [band][ceil(k / 2)][band_rows] of uint32_t: BF16 x[2j] in the low half,
  // x[2j + 1] (0 where 2j + 1 = k) in the high half.
  const uint32_t* x_bf16_pairs = nullptr;
  const void* w = nullptr;   // panels: [panels][k][32] of uint16_t BF16, float or int8_t
  const float* scales = nullptr;  // INT8: [panels][ceil(k / kKBlock)][32]
  int64_t k = 0;             // input features
  int64_t n = 0;             // output features (rows of w)
  int64_t p0 = 0, p1 = 0;    // panels to compute
  const float* bias = nullptr;  // may be null
  float* y = nullptr;        // M rows, stride ldy floats
  int64_t ldy = 0;
  bool accumulate = false;   // y += result instead of y = result
};

// Fills x_bands (ceil(m / band_rows) * band_rows * k floats) from x, for bands [b0, b1);
// the last band's rows past m are left unset (no tile reads them). A decode step packs one
// row, not a whole band.
void pack_bands(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t band_rows, int64_t b0, int64_t b1,
                float* x_bands);

// The BF16 pairs of matmul_bf16dot_avx512bf16 (MatMulArgs::x_bf16_pairs,
// ceil(m / band_rows) * band_rows * ceil(k / 2) words) for bands [b0, b1); rows past m
// in the last band are left unset. Needs AVX512_BF16 (PHI_NO_AVX512 builds: plain C++).
void pack_bands_bf16_pairs(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t band_rows, int64_t b0,
                           int64_t b1, uint32_t* x_pairs);

// BF16 weights times BF16-rounded activations with vdpbf16ps (contract above); reads
// x_bf16_pairs, whose band_rows must be kBandRowsAvx512.
void matmul_bf16dot_avx512bf16(const MatMulArgs& a);
void matmul_bf16_avx512(const MatMulArgs& a);
void matmul_f32_avx512(const MatMulArgs& a);
void matmul_int8_avx512(const MatMulArgs& a);
void matmul_bf16_avx2(const MatMulArgs& a);
void matmul_f32_avx2(const MatMulArgs& a);
void matmul_int8_avx2(const MatMulArgs& a);
void matmul_bf16_portable(const MatMulArgs& a);
void matmul_f32_portable(const MatMulArgs& a);
void matmul_int8_portable(const MatMulArgs& a);

}  // namespace phi::worker::cpu::kernels

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_MATMUL_KERNELS_H_
