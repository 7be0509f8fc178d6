// LoRA adapters on PhiCudaModel: the slots' matrices on the device (SetAdapter), the step's
// segments of tokens that share a slot, and the layer steps that add each adapted linear
// layer's delta with the segmented shrink/expand kernels (lora_kernels.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "services/worker/backends/cuda/phi_cuda_model.h"
#include "services/worker/backends/cuda/phi_cuda_model_internal.h"

namespace phi::worker::cuda {
namespace {

constexpr const char* kTargetNames[kLoraTargets] = {"q_proj", "k_proj", "v_proj",
                                                    "dense",  "fc1",    "fc2"};

std::string Where(int li, int t) {
  return "layer " + std::to_string(li) + " " + kTargetNames[t];
}

}  // namespace

// Called by Init when the options ask for slots.
CudaStatus PhiCudaModel::AllocateAdapterTable() {
  const int slots = options_.max_adapter_slots;
  adapter_arenas_.assign(slots + 1, nullptr);
  adapter_held_.assign(slots + 1, 0);
  lora_table_host_.assign(static_cast<size_t>(config_.num_layers) * kLoraTargets * (slots + 1),
                          LoraSlotWeights{});
  lora_adapted_.assign(static_cast<size_t>(config_.num_layers) * kLoraTargets, 0);
  if (slots == 0) return {};
  const size_t table_bytes = lora_table_host_.size() * sizeof(LoraSlotWeights);
  PHI_CUDA_CHECK(cudaMalloc(&lora_table_, table_bytes));
  PHI_CUDA_CHECK(cudaMemcpy(lora_table_, lora_table_host_.data(), table_bytes, cudaMemcpyHostToDevice));
  PHI_CUDA_CHECK(cudaMalloc(&lora_u_, 4 * static_cast<size_t>(options_.max_tokens_per_step) *
                                          options_.max_adapter_rank));
  return {};
}

size_t PhiCudaModel::LoraTableIndex(int li, LoraTarget t, int slot) const {
  return (static_cast<size_t>(li) * kLoraTargets + static_cast<int>(t)) *
             (options_.max_adapter_slots + 1) + slot;
}

std::array<int, 2> PhiCudaModel::LoraShape(LoraTarget t) const {
  const int h = config_.hidden_size, ha = config_.num_heads * config_.head_dim,
            i = config_.intermediate_size;
  switch (t) {
    case LoraTarget::kQ:
    case LoraTarget::kK:
    case LoraTarget::kV: return {h, ha};
    case LoraTarget::kDense: return {ha, h};
    case LoraTarget::kFc1: return {h, i};
    case LoraTarget::kFc2: return {i, h};
  }
  return {0, 0};
}

CudaStatus PhiCudaModel::CheckAdapter(const PhiCudaAdapter& adapter) const {
  if (static_cast<int>(adapter.layers.size()) != config_.num_layers) {
    return CudaStatus::Invalid("SetAdapter: adapter has " + std::to_string(adapter.layers.size()) +
                               " layers, the model " + std::to_string(config_.num_layers));
  }
  for (int li = 0; li < config_.num_layers; ++li) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const PhiCudaLoraWeights& w = adapter.layers[li][t];
      if (w.rank == 0) continue;
      const auto [in, out] = LoraShape(static_cast<LoraTarget>(t));
      if (w.rank < 0 || w.rank > options_.max_adapter_rank) {
        return CudaStatus::Invalid("SetAdapter: " + Where(li, t) + ": rank " +
                                   std::to_string(w.rank) + " outside [1, max_adapter_rank " +
                                   std::to_string(options_.max_adapter_rank) + "]");
      }
      if (w.a.size() != static_cast<size_t>(w.rank) * in ||
          w.b.size() != static_cast<size_t>(out) * w.rank) {
        return CudaStatus::Invalid("SetAdapter: " + Where(li, t) + ": A has " +
                                   std::to_string(w.a.size()) + " values and B " +
                                   std::to_string(w.b.size()) + ", rank " + std::to_string(w.rank) +
                                   " needs " + std::to_string(static_cast<size_t>(w.rank) * in) +
                                   " and " + std::to_string(static_cast<size_t>(out) * w.rank));
      }
    }
  }
  return {};
}

// One allocation per slot; the old one is freed only once the new table is in place.
CudaStatus PhiCudaModel::SetAdapter(int slot, const PhiCudaAdapter* adapter) {
  if (slot < 1 || slot > options_.max_adapter_slots) {
    return CudaStatus::Invalid("SetAdapter: slot " + std::to_string(slot) + " outside [1, " +
                               std::to_string(options_.max_adapter_slots) + "] (max_adapter_slots)");
  }
  std::vector<LoraSlotWeights> entries(static_cast<size_t>(config_.num_layers) * kLoraTargets);
  std::unique_ptr<char, DeviceFree> arena;
  if (adapter != nullptr) {
    PHI_CUDA_RETURN_IF_ERROR(CheckAdapter(*adapter));
    PHI_CUDA_RETURN_IF_ERROR(UploadAdapter(slot, *adapter, &arena, &entries));
  }
  // No step is in flight (Forward waits for its own); the table changes in place.
  PHI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (int li = 0; li < config_.num_layers; ++li) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const LoraTarget target = static_cast<LoraTarget>(t);
      lora_table_host_[LoraTableIndex(li, target, slot)] =
          entries[static_cast<size_t>(li) * kLoraTargets + t];
      char adapted = 0;
      for (int s = 1; s <= options_.max_adapter_slots; ++s) {
        adapted |= lora_table_host_[LoraTableIndex(li, target, s)].rank > 0;
      }
      lora_adapted_[static_cast<size_t>(li) * kLoraTargets + t] = adapted;
    }
  }
  PHI_CUDA_CHECK(cudaMemcpy(lora_table_, lora_table_host_.data(),
                            lora_table_host_.size() * sizeof(LoraSlotWeights), cudaMemcpyHostToDevice));
  if (adapter_arenas_[slot] != nullptr) PHI_CUDA_CHECK(cudaFree(adapter_arenas_[slot]));
  adapter_arenas_[slot] = arena.release();
  adapter_held_[slot] = adapter != nullptr;
  return {};
}

// BF16 copies of A [rank, in] and of B transposed, [rank, out] (lora_kernels.h says why), in
// one new allocation; entries[layer * kLoraTargets + target] point into it.
CudaStatus PhiCudaModel::UploadAdapter(int slot, const PhiCudaAdapter& adapter,
                                       std::unique_ptr<char, DeviceFree>* arena,
                                       std::vector<LoraSlotWeights>* entries) const {
  size_t bytes = 0;
  for (const auto& layer : adapter.layers) {
    for (const PhiCudaLoraWeights& w : layer) {
      bytes = align_up(align_up(bytes + 2 * w.a.size(), 256) + 2 * w.b.size(), 256);
    }
  }
  if (bytes == 0) return {};
  char* base = nullptr;
  // Out of device memory refuses this adapter (the engine may evict another), nothing more.
  if (cudaMalloc(&base, bytes) != cudaSuccess) {
    cudaGetLastError();
    return CudaStatus::Exhausted("SetAdapter: slot " + std::to_string(slot) + ": " +
                                 std::to_string(bytes) + " bytes of adapter weights do not fit "
                                 "in the GPU memory left");
  }
  arena->reset(base);
  size_t at = 0;
  std::vector<bf16> host;
  for (int li = 0; li < config_.num_layers; ++li) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const PhiCudaLoraWeights& w = adapter.layers[li][t];
      if (w.rank == 0) continue;
      const int out = LoraShape(static_cast<LoraTarget>(t))[1];
      LoraSlotWeights& e = (*entries)[static_cast<size_t>(li) * kLoraTargets + t];
      host.resize(w.a.size());
      for (size_t k = 0; k < w.a.size(); ++k) host[k] = __float2bfloat16(w.a[k]);
      PHI_CUDA_CHECK(cudaMemcpy(base + at, host.data(), 2 * host.size(), cudaMemcpyHostToDevice));
      e.a = reinterpret_cast<const bf16*>(base + at);
      at = align_up(at + 2 * w.a.size(), 256);
      host.resize(w.b.size());
      for (int o = 0; o < out; ++o) {
        for (int j = 0; j < w.rank; ++j) {
          host[static_cast<size_t>(j) * out + o] = __float2bfloat16(w.b[static_cast<size_t>(o) * w.rank + j]);
        }
      }
      PHI_CUDA_CHECK(cudaMemcpy(base + at, host.data(), 2 * host.size(), cudaMemcpyHostToDevice));
      e.b_t = reinterpret_cast<const bf16*>(base + at);
      at = align_up(at + 2 * w.b.size(), 256);
      e.rank = w.rank;
      e.scaling = w.scaling;
    }
  }
  return {};
}

std::vector<LoraSegment> PhiCudaModel::LoraSegmentsOf(std::span<const PhiSeqInput> seqs) {
  std::vector<LoraSegment> segs;
  int tok = 0;
  for (const PhiSeqInput& s : seqs) {
    const int n = static_cast<int>(s.tokens.size());
    if (s.adapter_slot > 0) {
      if (!segs.empty() && segs.back().slot == s.adapter_slot &&
          segs.back().start + segs.back().count == tok) {
        segs.back().count += n;
      } else {
        segs.push_back({tok, n, s.adapter_slot});
      }
    }
    tok += n;
  }
  return segs;
}

void PhiCudaModel::PackLoraSegments(std::span<const LoraSegment> segments, Layout* L) {
  for (const LoraSegment& sg : segments) {
    L->lora_max_segment_tokens = std::max(L->lora_max_segment_tokens, sg.count);
  }
  if (segments.empty()) return;
  std::memcpy(meta_host_ + L->lora_segments, segments.data(), sizeof(LoraSegment) * segments.size());
}

CudaStatus PhiCudaModel::LoraW1(const Pass& p, int li) {
  const PhiCudaConfig& c = config_;
  const int ha = c.num_heads * c.head_dim;
  if (p.layout->n_lora_segments == 0) return {};
  const int h = c.hidden_size, w1 = c.w1_rows();
  PHI_CUDA_RETURN_IF_ERROR(LoraLinear(p, li, LoraTarget::kQ, h_, h, qkvf_, false, w1));
  PHI_CUDA_RETURN_IF_ERROR(LoraLinear(p, li, LoraTarget::kK, h_, h, qkvf_ + ha, false, w1));
  PHI_CUDA_RETURN_IF_ERROR(LoraLinear(p, li, LoraTarget::kV, h_, h, qkvf_ + 2 * ha, false, w1));
  return LoraLinear(p, li, LoraTarget::kFc1, h_, h, qkvf_ + 3 * ha, false, w1);
}

CudaStatus PhiCudaModel::LoraW2(const Pass& p, int li) {
  const PhiCudaConfig& c = config_;
  const int ha = c.num_heads * c.head_dim;
  if (p.layout->n_lora_segments == 0) return {};
  const int h = c.hidden_size, w2 = c.w2_cols();
  PHI_CUDA_RETURN_IF_ERROR(LoraLinear(p, li, LoraTarget::kDense, mid_, w2, x_, true, h));
  return LoraLinear(p, li, LoraTarget::kFc2, mid_ + ha, w2, x_, true, h);
}

// y += delta of target t for every token whose slot adapts it: shrink into U, then expand.
CudaStatus PhiCudaModel::LoraLinear(const Pass& p, int li, LoraTarget t, const bf16* x,
                                    int x_stride, void* y, bool y_f32, int y_stride) {
  if (!lora_adapted_[static_cast<size_t>(li) * kLoraTargets + static_cast<int>(t)]) return {};
  const Layout& L = *p.layout;
  const auto [in, out] = LoraShape(t);
  LoraSegments seg;
  seg.slots = lora_table_ + LoraTableIndex(li, t, 0);
  seg.segments = reinterpret_cast<const LoraSegment*>(Meta(L.lora_segments));
  seg.num_segments = L.n_lora_segments;
  seg.max_segment_tokens = L.lora_max_segment_tokens;
  LoraShrinkArgs sa;
  sa.seg = seg;
  sa.x = x;
  sa.x_stride = x_stride;
  sa.in = in;
  sa.u = lora_u_;
  sa.u_stride = options_.max_adapter_rank;
  PHI_CUDA_RETURN_IF_ERROR(lora_shrink_forward(sa, stream_));
  LoraExpandArgs ea;
  ea.seg = seg;
  ea.u = lora_u_;
  ea.u_stride = options_.max_adapter_rank;
  ea.y = y;
  ea.y_f32 = y_f32;
  ea.y_stride = y_stride;
  ea.out = out;
  return lora_expand_forward(ea, stream_);
}

}  // namespace phi::worker::cuda
