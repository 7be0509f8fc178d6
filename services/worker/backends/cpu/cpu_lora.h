// A LoRA adapter laid out for the CPU runner's fused GEMMs (phi_cpu_runner.h): for a group of
// rows that share the adapter, delta = scaling * B (A x) is two small GEMMs per fused matrix,
// added into the base GEMMs' outputs.
//   [q|k|v|fc1]: one shrink s = h [A_q; A_k; A_v; A_fc1]^T (the adapted modules' A rows
//                stacked), then per module y_in[:, module's columns] += s_m (scaling B_m)^T.
//   [dense|fc2]: s_d = z[:, attention columns] A_dense^T and s_f = z[:, fc1 columns] A_fc2^T,
//                then one expand y += [s_d | s_f] [scaling B_dense | scaling B_fc2]^T.
// Every GEMM is MatMul's (row-invariant), and each delta is added to y once, after the base
// GEMM, in a fixed order, so a row's result does not depend on the other rows of the batch.
// The adapter is F32 whatever the base weights' format.
//
// Usage:
//   PHI_ASSIGN_OR_RETURN(auto packed, PackedLoraAdapter::Pack(*shard_adapter, dims));
//   packed->AddInDelta(matmul, layer, h, rows, y_in, n_in, &scratch);   // after h W_in^T + b_in
//   packed->AddOutDelta(matmul, layer, z, rows, k_out, y, ldy, &scratch);  // beside z W_out^T
#ifndef PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_LORA_H_
#define PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_LORA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/backends/cpu/matmul.h"
#include "services/worker/lora/lora_adapter.h"

namespace phi::worker::cpu {

// This rank's layer widths the adapter must fit: q/k/v are [attn, hidden], fc1 [fc1, hidden],
// dense [hidden, attn], fc2 [hidden, fc1].
struct LoraLayerDims {
  int num_layers = 0;
  int64_t hidden = 0, attn = 0, fc1 = 0;
};

class PackedLoraAdapter {
 public:
  // OK when every matrix of `adapter` fits `dims` (the layer count, each module's [out, in],
  // A and B sizes); else INVALID_ARGUMENT naming the layer and module.
  static absl::Status CheckFits(const lora::LoraAdapter& adapter, const LoraLayerDims& dims);
  // `adapter` is this rank's slice (lora::SliceForShard); CheckFits(adapter, dims) first.
  static absl::StatusOr<std::unique_ptr<PackedLoraAdapter>> Pack(const lora::LoraAdapter& adapter,
                                                                 const LoraLayerDims& dims);

  // y_in[r * ld_in + c] += the q/k/v/fc1 deltas of layer `layer` for rows r < rows of
  // h (stride dims.hidden), at the fused W_in columns c of each module (ld_in >= 3 attn + fc1).
  void AddInDelta(MatMul& matmul, int layer, const float* h, int64_t rows, float* y_in, int64_t ld_in,
                  std::vector<float>* scratch) const;
  // y[r * ldy + c] += the dense + fc2 delta of layer `layer` (c < hidden) from z = [attention
  // output | gelu(fc1)] (stride ld_z). Under tensor parallelism a partial sum, like z W_out^T.
  void AddOutDelta(MatMul& matmul, int layer, const float* z, int64_t rows, int64_t ld_z, float* y, int64_t ldy,
                   std::vector<float>* scratch) const;

  const std::string& name() const { return name_; }
  // Bytes of the packed matrices (panels padded to 32 rows).
  int64_t memory_bytes() const;

 private:
  // One module's expand: s columns [s_col, s_col + rank) times (scaling B)^T into the fused
  // output's columns [y_col, y_col + out).
  struct Expand {
    PackedMatrix b;  // [out, rank], scaled
    int64_t s_col = 0, y_col = 0;
  };
  struct Layer {
    PackedMatrix a_in;  // [r_in, hidden]: A of q, k, v, fc1 (the adapted ones, in that order)
    int64_t r_in = 0;
    std::vector<Expand> in_expands;
    PackedMatrix a_dense, a_fc2;  // [r_dense, attn], [r_fc2, fc1]
    int64_t r_dense = 0, r_fc2 = 0;
    PackedMatrix b_out;  // [hidden, r_dense + r_fc2]: scaling B_dense | scaling B_fc2
  };

  PackedLoraAdapter() = default;

  std::string name_;
  LoraLayerDims dims_;
  std::vector<Layer> layers_;
};

}  // namespace phi::worker::cpu

#endif  // PHI_SERVICES_WORKER_BACKENDS_CPU_CPU_LORA_H_
