// oneDNN against this backend's own GEMMs on Phi-1.5's shapes: the measurement behind the
// choice of GEMM kernels (services/worker/backends/cpu/README.md, "Kernel paths"). Built
// only where Debian's libdnnl-dev is installed (an optional bench, not a dependency).
//
//   onednn_gemm_bench [--threads 2] [--reps 5]      (oneDNN's threads: OMP_NUM_THREADS)
//
// For each shape (M tokens x N outputs x K inputs): the best of --reps runs of
//   phi-serve MatMul, BF16 weights, every kernel path the CPU runs;
//   oneDNN sgemm (F32 weights: twice the bytes, activations F32);
//   oneDNN matmul, BF16 activations x BF16 weights -> F32 (oneDNN 2.6 has no F32 x BF16);
// and whether a row's result is the same when computed alone (M = 1) as inside the batch,
// the property the engine's batch-independent outputs rest on.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "dnnl.hpp"
#include "services/worker/backends/cpu/cpu_features.h"
#include "services/worker/backends/cpu/matmul.h"
#include "services/worker/model/dtype.h"

namespace {

double BestSeconds(int reps, const std::function<void()>& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

struct Shape {
  const char* name;
  int64_t m, n, k;
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--reps N]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1 || reps < 1) {
    std::fprintf(stderr, "--threads and --reps must be >= 1\n");
    return 2;
  }
  using phi::worker::cpu::Isa;
  phi::worker::cpu::ThreadPool pool(threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  std::printf("| shape (M x N x K) | kernel | ms | GFLOP/s | row alone == row in batch |\n|---|---|---|---|---|\n");
  for (const Shape s : {Shape{"prefill [q|k|v|fc1]", 512, 14336, 2048}, Shape{"prefill [dense|fc2]", 512, 2048, 10240},
                        Shape{"decode [q|k|v|fc1]", 1, 14336, 2048}}) {
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    std::vector<float> w(s.n * s.k), x(s.m * s.k), y(s.m * s.n), y1(s.n);
    for (auto& v : w) v = phi::worker::model::Bf16ToF32(phi::worker::model::F32ToBf16(dist(rng)));
    for (auto& v : x) v = dist(rng) * 50;
    std::vector<uint16_t> wb(w.size()), xb(x.size());
    for (size_t i = 0; i < w.size(); ++i) wb[i] = phi::worker::model::F32ToBf16(w[i]);
    for (size_t i = 0; i < x.size(); ++i) xb[i] = phi::worker::model::F32ToBf16(x[i]);
    const double flop = 2.0 * s.m * s.n * s.k;
    auto row = [&](const char* kernel, double sec, bool same) {
      std::printf("| %s (%lld x %lld x %lld) | %s | %.2f | %.1f | %s |\n", s.name, static_cast<long long>(s.m),
                  static_cast<long long>(s.n), static_cast<long long>(s.k), kernel, sec * 1e3, flop / sec / 1e9,
                  s.m == 1 ? "-" : same ? "yes" : "no");
    };
    auto row0_same = [&](const float* batch, const float* alone) {
      return std::memcmp(batch, alone, s.n * sizeof(float)) == 0;
    };

    phi::worker::cpu::PackedMatrix packed(phi::worker::cpu::WeightFormat::kBF16, s.n, s.k);
    packed.SetBlock(0, 0, s.n, s.k, wb.data());
    for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
      if (!phi::worker::cpu::CpuSupports(isa)) continue;
      phi::worker::cpu::MatMul mm(isa, &pool);
      const double sec =
          BestSeconds(reps, [&] { mm.Run(x.data(), s.m, s.k, packed, nullptr, y.data(), s.n, false); });
      mm.Run(x.data(), 1, s.k, packed, nullptr, y1.data(), s.n, false);
      row(("phi-serve " + std::string(phi::worker::cpu::IsaName(isa)) + " (F32 FMA, BF16 weights)").c_str(), sec,
          row0_same(y.data(), y1.data()));
    }

    // sgemm: C[m, n] = X[m, k] * W[n, k]^T, row-major.
    const double sg = BestSeconds(reps, [&] {
      dnnl_sgemm('N', 'T', s.m, s.n, s.k, 1.0f, x.data(), s.k, w.data(), s.k, 0.0f, y.data(), s.n);
    });
    dnnl_sgemm('N', 'T', 1, s.n, s.k, 1.0f, x.data(), s.k, w.data(), s.k, 0.0f, y1.data(), s.n);
    row("oneDNN sgemm (F32 weights)", sg, row0_same(y.data(), y1.data()));

    // matmul primitive, bf16 x bf16 -> f32, weights as [k, n] with strides of W[n, k].
    auto bf16_matmul = [&](int64_t m, const uint16_t* src, float* dst) {
      using dt = dnnl::memory::data_type;
      dnnl::memory::desc a({m, s.k}, dt::bf16, {s.k, 1});
      dnnl::memory::desc b({s.k, s.n}, dt::bf16, {1, s.k});
      dnnl::memory::desc c({m, s.n}, dt::f32, {s.n, 1});
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
      dnnl::matmul prim(pd);
      dnnl::memory am(a, eng, const_cast<uint16_t*>(src)), bm(b, eng, wb.data()), cm(c, eng, dst);
      return std::function<void()>([prim, am, bm, cm, &strm]() mutable {
        prim.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
        strm.wait();
      });
    };
    try {
      auto run = bf16_matmul(s.m, xb.data(), y.data());
      const double mb = BestSeconds(reps, run);
      bf16_matmul(1, xb.data(), y1.data())();
      row("oneDNN matmul (BF16 activations and weights)", mb, row0_same(y.data(), y1.data()));
    } catch (const dnnl::error& e) {
      std::printf("| %s | oneDNN matmul bf16 | unsupported: %s | | |\n", s.name, e.what());
    }
  }
  std::printf("\nphi-serve threads: %d; oneDNN threads: OMP_NUM_THREADS=%s\n", threads,
              std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "(unset)");
  return 0;
}
