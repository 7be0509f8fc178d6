#include "services/worker/backends/cpu/cpu_lora.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "services/worker/model/phi_fused_weights.h"

namespace phi::worker::cpu {
namespace {

using lora::LoraModule;

// The base layer's [out, in] on this rank.
struct ModuleShape {
  int64_t out = 0, in = 0;
};

ModuleShape ShapeOf(LoraModule m, const LoraLayerDims& d) {
  switch (m) {
    case LoraModule::kQ:
    case LoraModule::kK:
    case LoraModule::kV: return {d.attn, d.hidden};
    case LoraModule::kFc1: return {d.fc1, d.hidden};
    case LoraModule::kDense: return {d.hidden, d.attn};
    case LoraModule::kFc2: return {d.hidden, d.fc1};
  }
  return {};
}

absl::Status ModuleFits(const lora::LoraAdapter& adapter, int layer, LoraModule m, const lora::LoraWeights& w,
                       const LoraLayerDims& dims) {
  const ModuleShape s = ShapeOf(m, dims);
  const int64_t r = w.rank;
  if (r < 1 || w.in != s.in || w.out != s.out || static_cast<int64_t>(w.a.size()) != r * w.in ||
      static_cast<int64_t>(w.b.size()) != w.out * r) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter '", adapter.name, "' ", lora::LoraModulePath(layer, m), ": lora_A [", r, ", ", w.in, "] and lora_B [",
        w.out, ", ", r, "] (", w.a.size(), " and ", w.b.size(), " values) do not fit the runner's layer [", s.out, ", ",
        s.in, "] (rank >= 1)"));
  }
  return absl::OkStatus();
}

// scale * b, row-major [out, rank] as the B matrices are.
std::vector<float> Scaled(const std::vector<float>& b, float scale) {
  std::vector<float> out(b.size());
  for (size_t i = 0; i < b.size(); ++i) out[i] = b[i] * scale;
  return out;
}

void Grow(std::vector<float>* v, int64_t n) {
  if (static_cast<int64_t>(v->size()) < n) v->resize(static_cast<size_t>(n));
}

}  // namespace

absl::Status PackedLoraAdapter::CheckFits(const lora::LoraAdapter& adapter, const LoraLayerDims& dims) {
  if (static_cast<int>(adapter.layers.size()) != dims.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("adapter '", adapter.name, "' has ", adapter.layers.size(),
                                                   " layers, the model ", dims.num_layers));
  }
  for (int l = 0; l < dims.num_layers; ++l) {
    for (int m = 0; m < lora::kNumLoraModules; ++m) {
      if (const lora::LoraWeights* w = adapter.weights(l, static_cast<LoraModule>(m))) {
        if (auto s = ModuleFits(adapter, l, static_cast<LoraModule>(m), *w, dims); !s.ok()) return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PackedLoraAdapter>> PackedLoraAdapter::Pack(const lora::LoraAdapter& adapter,
                                                                           const LoraLayerDims& dims) {
  if (absl::Status s = CheckFits(adapter, dims); !s.ok()) return s;
  std::unique_ptr<PackedLoraAdapter> p(new PackedLoraAdapter());
  p->name_ = adapter.name;
  p->dims_ = dims;
  p->layers_.resize(static_cast<size_t>(dims.num_layers));
  for (int l = 0; l < dims.num_layers; ++l) {
    Layer& L = p->layers_[static_cast<size_t>(l)];
    // [q|k|v|fc1]: the A's stacked in W_in's module order, one expand per module.
    const auto in_parts = model::FusedInParts(l, dims.attn, dims.fc1);
    constexpr LoraModule kInModules[4] = {LoraModule::kQ, LoraModule::kK, LoraModule::kV, LoraModule::kFc1};
    for (const LoraModule m : kInModules) {
      if (const lora::LoraWeights* w = adapter.weights(l, m)) L.r_in += w->rank;
    }
    if (L.r_in > 0) {
      L.a_in = PackedMatrix(WeightFormat::kF32, L.r_in, dims.hidden);
      int64_t s_col = 0;
      for (int i = 0; i < 4; ++i) {
        const lora::LoraWeights* w = adapter.weights(l, kInModules[i]);
        if (w == nullptr) continue;
        L.a_in.SetBlock(s_col, 0, w->rank, w->in, w->a.data());
        Expand e;
        e.b = PackedMatrix(WeightFormat::kF32, w->out, w->rank);
        const std::vector<float> b = Scaled(w->b, w->scaling);
        e.b.SetBlock(0, 0, w->out, w->rank, b.data());
        e.s_col = s_col;
        e.y_col = in_parts[static_cast<size_t>(i)].offset;
        L.in_expands.push_back(std::move(e));
        s_col += w->rank;
      }
    }
    // [dense|fc2]: a shrink per module on its columns of z, one expand over both ranks.
    const lora::LoraWeights* dense = adapter.weights(l, LoraModule::kDense);
    const lora::LoraWeights* fc2 = adapter.weights(l, LoraModule::kFc2);
    L.r_dense = dense != nullptr ? dense->rank : 0;
    L.r_fc2 = fc2 != nullptr ? fc2->rank : 0;
    if (L.r_dense + L.r_fc2 > 0) L.b_out = PackedMatrix(WeightFormat::kF32, dims.hidden, L.r_dense + L.r_fc2);
    if (dense != nullptr) {
      L.a_dense = PackedMatrix(WeightFormat::kF32, dense->rank, dense->in);
      L.a_dense.SetBlock(0, 0, dense->rank, dense->in, dense->a.data());
      const std::vector<float> b = Scaled(dense->b, dense->scaling);
      L.b_out.SetBlock(0, 0, dims.hidden, dense->rank, b.data());
    }
    if (fc2 != nullptr) {
      L.a_fc2 = PackedMatrix(WeightFormat::kF32, fc2->rank, fc2->in);
      L.a_fc2.SetBlock(0, 0, fc2->rank, fc2->in, fc2->a.data());
      const std::vector<float> b = Scaled(fc2->b, fc2->scaling);
      L.b_out.SetBlock(0, L.r_dense, dims.hidden, fc2->rank, b.data());
    }
  }
  return p;
}

void PackedLoraAdapter::AddInDelta(MatMul& matmul, int layer, const float* h, int64_t rows, float* y_in,
                                   int64_t ld_in, std::vector<float>* scratch) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  if (L.r_in == 0 || rows <= 0) return;
  Grow(scratch, rows * L.r_in);
  float* s = scratch->data();
  matmul.Run(h, rows, dims_.hidden, L.a_in, nullptr, s, L.r_in, /*accumulate=*/false);
  for (const Expand& e : L.in_expands) {
    matmul.Run(s + e.s_col, rows, L.r_in, e.b, nullptr, y_in + e.y_col, ld_in, /*accumulate=*/true);
  }
}

void PackedLoraAdapter::AddOutDelta(MatMul& matmul, int layer, const float* z, int64_t rows, int64_t ld_z, float* y,
                                    int64_t ldy, std::vector<float>* scratch) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  const int64_t r = L.r_dense + L.r_fc2;
  if (r == 0 || rows <= 0) return;
  Grow(scratch, rows * r);
  float* s = scratch->data();
  if (L.r_dense > 0) matmul.Run(z, rows, ld_z, L.a_dense, nullptr, s, r, /*accumulate=*/false);
  if (L.r_fc2 > 0) matmul.Run(z + dims_.attn, rows, ld_z, L.a_fc2, nullptr, s + L.r_dense, r, /*accumulate=*/false);
  matmul.Run(s, rows, r, L.b_out, nullptr, y, ldy, /*accumulate=*/true);
}

int64_t PackedLoraAdapter::memory_bytes() const {
  int64_t b = 0;
  for (const Layer& L : layers_) {
    b += static_cast<int64_t>(L.a_in.memory_bytes() + L.a_dense.memory_bytes() + L.a_fc2.memory_bytes() +
                              L.b_out.memory_bytes());
    for (const Expand& e : L.in_expands) b += static_cast<int64_t>(e.b.memory_bytes());
  }
  return b;
}

}  // namespace phi::worker::cpu
