// The LoRA shrink and expand kernels (lora_kernels.h) against their CPU twins and a double
// reference: ranks 1, 8, 16 and 64 in one launch, input and output widths that are not
// multiples of the kernels' tiles, many segments (empty ones, base-model ones, a slot whose
// adapter leaves the layer alone, segments longer than a token tile), F32 and BF16 outputs
// at a column offset of a wider matrix; and a token's result does not depend on the other
// segments or on where its segment starts. Label: gpu (emu on the CPU emulator).
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/lora_kernels.h"
#include "tests/unit/worker/cuda/gpu_test_util.h"
#include "tests/unit/worker/cuda/lora_kernels_cpu.h"

namespace phi::worker::cuda {
namespace {

using testing::DeviceBuffer;
using testing::kTolBf16;
using testing::RandomBf16Values;
using testing::RelNormError;
using testing::ToBf16;
using testing::ToF32;

constexpr int kUStride = 64;  // the largest rank below

// Slots 1..4 with ranks 1, 8, 16, 64 and slot 5 of rank 0 (an adapter without this layer),
// as host values (BF16-exact) and on the device.
struct Slots {
  int in = 0, out = 0;
  std::vector<std::vector<float>> a, b_t;  // per slot: [rank, in], [rank, out]
  std::vector<LoraSlotWeightsCpu> host;
  std::vector<std::unique_ptr<DeviceBuffer<bf16>>> dev;
  std::unique_ptr<DeviceBuffer<LoraSlotWeights>> table;

  Slots(int in_, int out_) : in(in_), out(out_) {
    const int ranks[] = {0, 1, 8, 16, 64, 0};
    const int n = 6;
    a.resize(n);
    b_t.resize(n);
    host.resize(n);
    std::vector<LoraSlotWeights> dt(n);
    for (int s = 1; s < n; ++s) {
      const int r = ranks[s];
      if (r == 0) continue;
      a[s] = RandomBf16Values(static_cast<size_t>(r) * in, 100 + s, 0.3f);
      b_t[s] = RandomBf16Values(static_cast<size_t>(r) * out, 200 + s, 0.3f);
      const float scaling = 2.0f / std::sqrt(static_cast<float>(r));  // rsLoRA's: deltas of one size
      host[s] = {a[s].data(), b_t[s].data(), r, scaling};
      dev.push_back(std::make_unique<DeviceBuffer<bf16>>(a[s].size()));
      dev.back()->Upload(ToBf16(a[s]));
      dt[s].a = dev.back()->get();
      dev.push_back(std::make_unique<DeviceBuffer<bf16>>(b_t[s].size()));
      dev.back()->Upload(ToBf16(b_t[s]));
      dt[s].b_t = dev.back()->get();
      dt[s].rank = r;
      dt[s].scaling = scaling;
    }
    table = std::make_unique<DeviceBuffer<LoraSlotWeights>>(n);
    table->Upload(dt);
  }
};

// Segments over 40 tokens: empty ones, the base (slot 0), rank 0 (slot 5), every rank, runs
// of 1, 3, 4, 5 and 9 tokens (token tiles of 4).
std::vector<LoraSegment> AwkwardSegments() {
  return {{0, 3, 2}, {3, 0, 4}, {3, 1, 1}, {4, 5, 0}, {9, 9, 4}, {18, 4, 3}, {22, 0, 0},
          {22, 2, 5}, {24, 5, 2}, {29, 1, 4}, {30, 3, 1}, {33, 7, 3}};
}
constexpr int kTokens = 40;

int MaxCount(const std::vector<LoraSegment>& segs) {
  int m = 0;
  for (const LoraSegment& s : segs) m = std::max(m, s.count);
  return m;
}

// Shrink then expand on the device into y (rows of y_stride, columns [col0, col0 + out)).
struct KernelRun {
  std::vector<float> u, y;
};
KernelRun RunKernels(const Slots& slots, const std::vector<LoraSegment>& segs,
               const std::vector<float>& x, int x_stride, const std::vector<float>& y0,
               int y_stride, int col0, bool y_f32) {
  const int rows = static_cast<int>(y0.size()) / y_stride;
  DeviceBuffer<bf16> dx(x.size());
  dx.Upload(ToBf16(x));
  DeviceBuffer<LoraSegment> dseg(segs.size());
  dseg.Upload(segs);
  DeviceBuffer<float> du(static_cast<size_t>(rows) * kUStride);
  du.Poison();
  LoraSegments sg;
  sg.slots = slots.table->get();
  sg.segments = dseg.get();
  sg.num_segments = static_cast<int>(segs.size());
  sg.max_segment_tokens = MaxCount(segs);
  LoraShrinkArgs sa;
  sa.seg = sg;
  sa.x = dx.get();
  sa.x_stride = x_stride;
  sa.in = slots.in;
  sa.u = du.get();
  sa.u_stride = kUStride;
  KernelRun r;
  EXPECT_TRUE(lora_shrink_forward(sa, nullptr).ok());
  LoraExpandArgs ea;
  ea.seg = sg;
  ea.u = du.get();
  ea.u_stride = kUStride;
  ea.y_f32 = y_f32;
  ea.y_stride = y_stride;
  ea.out = slots.out;
  if (y_f32) {
    DeviceBuffer<float> dy(y0.size());
    dy.Upload(y0);
    ea.y = dy.get() + col0;
    EXPECT_TRUE(lora_expand_forward(ea, nullptr).ok());
    r.y = dy.Download();
  } else {
    DeviceBuffer<bf16> dy(y0.size());
    dy.Upload(ToBf16(y0));
    ea.y = dy.get() + col0;
    EXPECT_TRUE(lora_expand_forward(ea, nullptr).ok());
    r.y = ToF32(dy.Download());
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  r.u = du.Download();
  return r;
}

// y0 + scaling * B (A x) in double for the adapted tokens, y0 elsewhere.
std::vector<double> Reference(const Slots& slots, const std::vector<LoraSegment>& segs,
                              const std::vector<float>& x, int x_stride,
                              const std::vector<float>& y0, int y_stride, int col0) {
  std::vector<double> y(y0.begin(), y0.end());
  for (const LoraSegment& sg : segs) {
    const LoraSlotWeightsCpu& w = slots.host[sg.slot];
    if (sg.slot == 0 || w.rank == 0) continue;
    for (int t = sg.start; t < sg.start + sg.count; ++t) {
      std::vector<double> u(w.rank, 0.0);
      for (int j = 0; j < w.rank; ++j) {
        for (int k = 0; k < slots.in; ++k) {
          u[j] += static_cast<double>(x[t * x_stride + k]) * w.a[j * slots.in + k];
        }
      }
      for (int o = 0; o < slots.out; ++o) {
        double d = 0.0;
        for (int j = 0; j < w.rank; ++j) d += u[j] * w.b_t[j * slots.out + o];
        y[t * y_stride + col0 + o] += w.scaling * d;
      }
    }
  }
  return y;
}

// Whether token t is adapted by the table's segments.
bool Adapted(const Slots& slots, const std::vector<LoraSegment>& segs, int t) {
  for (const LoraSegment& sg : segs) {
    if (t >= sg.start && t < sg.start + sg.count) return sg.slot > 0 && slots.host[sg.slot].rank > 0;
  }
  return false;
}

TEST(LoraKernelsGpu, ShrinkExpandMatchTwinAndDoubleReference) {
  PHI_REQUIRE_GPU();
  struct Shape { int in, out; };
  for (Shape sh : {Shape{77, 131}, Shape{128, 40}, Shape{300, 257}}) {
    for (bool y_f32 : {true, false}) {
      SCOPED_TRACE("in=" + std::to_string(sh.in) + " out=" + std::to_string(sh.out) +
                   (y_f32 ? " F32 y" : " BF16 y"));
      const Slots slots(sh.in, sh.out);
      const std::vector<LoraSegment> segs = AwkwardSegments();
      const int x_stride = sh.in + 5, col0 = 3, y_stride = sh.out + 11;
      const std::vector<float> x = RandomBf16Values(static_cast<size_t>(kTokens) * x_stride, 7, 1.0f);
      const std::vector<float> y0 = RandomBf16Values(static_cast<size_t>(kTokens) * y_stride, 8, 0.25f);
      const KernelRun got = RunKernels(slots, segs, x, x_stride, y0, y_stride, col0, y_f32);

      std::vector<float> u_twin(static_cast<size_t>(kTokens) * kUStride, 0.0f), y_twin = y0;
      lora_shrink_forward_cpu(slots.host.data(), segs.data(), static_cast<int>(segs.size()),
                              x.data(), x_stride, sh.in, u_twin.data(), kUStride);
      lora_expand_forward_cpu(slots.host.data(), segs.data(), static_cast<int>(segs.size()),
                              u_twin.data(), kUStride, y_twin.data() + col0, y_stride, sh.out,
                              !y_f32);
      const std::vector<double> ref = Reference(slots, segs, x, x_stride, y0, y_stride, col0);

      // U of the adapted tokens (their rank's columns): kernel and twin, F32 sums of the same
      // products in different orders.
      std::vector<float> u_got, u_want;
      for (const LoraSegment& sg : segs) {
        const int r = slots.host[sg.slot].rank;
        if (sg.slot == 0 || r == 0) continue;
        for (int t = sg.start; t < sg.start + sg.count; ++t) {
          for (int j = 0; j < r; ++j) {
            u_got.push_back(got.u[t * kUStride + j]);
            u_want.push_back(u_twin[t * kUStride + j]);
          }
        }
      }
      ASSERT_FALSE(u_got.empty());
      EXPECT_LT(RelNormError(u_got, u_want), 1e-5);

      // The deltas of adapted tokens: kernel vs twin vs double; everything else untouched.
      std::vector<float> d_got, d_twin, d_ref;
      for (int t = 0; t < kTokens; ++t) {
        for (int c = 0; c < y_stride; ++c) {
          const size_t i = static_cast<size_t>(t) * y_stride + c;
          if (!Adapted(slots, segs, t) || c < col0 || c >= col0 + sh.out) {
            ASSERT_EQ(got.y[i], y0[i]) << "token " << t << " column " << c << " changed";
            continue;
          }
          d_got.push_back(got.y[i] - y0[i]);
          d_twin.push_back(y_twin[i] - y0[i]);
          d_ref.push_back(static_cast<float>(ref[i] - y0[i]));
        }
      }
      const double tol = y_f32 ? 1e-5 : kTolBf16;
      EXPECT_LT(RelNormError(d_got, d_twin), tol);
      EXPECT_LT(RelNormError(d_twin, d_ref), tol);
      EXPECT_LT(RelNormError(d_got, d_ref), tol);
    }
  }
}

// Token rows computed with every other segment present equal, bit for bit, the same tokens
// computed alone at another start offset (another place in their token tiles).
TEST(LoraKernelsGpu, TokenResultsDoNotDependOnTheBatch) {
  PHI_REQUIRE_GPU();
  const int in = 96, out = 70;
  const Slots slots(in, out);
  const std::vector<LoraSegment> segs = AwkwardSegments();
  const std::vector<float> x = RandomBf16Values(static_cast<size_t>(kTokens) * in, 17, 1.0f);
  const std::vector<float> y0 = RandomBf16Values(static_cast<size_t>(kTokens) * out, 18, 1.0f);
  const KernelRun all = RunKernels(slots, segs, x, in, y0, out, 0, true);
  for (const LoraSegment& sg : segs) {
    if (sg.count == 0) continue;
    SCOPED_TRACE("segment at " + std::to_string(sg.start) + " slot " + std::to_string(sg.slot));
    const int shift = 1 + sg.start % 3;  // rows before the segment, none of them adapted
    std::vector<float> xs(static_cast<size_t>(shift + sg.count) * in, 0.0f);
    std::vector<float> ys(static_cast<size_t>(shift + sg.count) * out, 0.0f);
    std::memcpy(xs.data() + shift * in, x.data() + sg.start * in, 4 * sg.count * in);
    std::memcpy(ys.data() + shift * out, y0.data() + sg.start * out, 4 * sg.count * out);
    const KernelRun one = RunKernels(slots, {{0, shift, 0}, {shift, sg.count, sg.slot}}, xs, in, ys,
                               out, 0, true);
    for (int t = 0; t < sg.count; ++t) {
      for (int o = 0; o < out; ++o) {
        ASSERT_EQ(std::memcmp(&one.y[(shift + t) * out + o], &all.y[(sg.start + t) * out + o], 4), 0)
            << "token " << sg.start + t << " column " << o;
      }
    }
  }
}

TEST(LoraKernelsGpu, RefusesBadArguments) {
  PHI_REQUIRE_GPU();
  LoraShrinkArgs sa;
  sa.seg.num_segments = 1;  // without tables
  sa.seg.max_segment_tokens = 1;
  EXPECT_FALSE(lora_shrink_forward(sa, nullptr).ok());
  LoraExpandArgs ea;
  ea.out = 4;
  ea.y_stride = 2;  // < out
  EXPECT_FALSE(lora_expand_forward(ea, nullptr).ok());
  // No segments: nothing to do, whatever the pointers.
  LoraShrinkArgs none;
  float u = 0;
  bf16 x{};
  none.x = &x;
  none.u = &u;
  none.in = 1;
  none.x_stride = 1;
  none.u_stride = 1;
  EXPECT_TRUE(lora_shrink_forward(none, nullptr).ok());
}

}  // namespace
}  // namespace phi::worker::cuda
