// The fused layer matrices both backends build at load, so that a layer is two GEMMs:
//   W_in  = [q; k; v; fc1] stacked by rows ([3 * attn + fc1, hidden]), b_in likewise;
//   W_out = [dense | fc2] side by side along K ([hidden, attn + fc1]),
//   b_out = dense.bias + fc2.bias.
// `attn` and `fc1` are this rank's widths (its heads x head_dim, its fc1 columns).
#ifndef PHI_SERVICES_WORKER_MODEL_PHI_FUSED_WEIGHTS_H_
#define PHI_SERVICES_WORKER_MODEL_PHI_FUSED_WEIGHTS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/model/phi_checkpoint.h"

namespace phi::worker::model {

// One checkpoint tensor's place in a fused matrix: rows [offset, offset + size) of W_in (and
// entries of b_in), or columns [offset, offset + size) of W_out.
struct FusedPart {
  std::string weight;  // "model.layers.3.self_attn.q_proj.weight"
  std::string bias;    // its bias ("" for W_out parts: b_out is FusedOutBias)
  int64_t offset = 0;
  int64_t size = 0;
};

// q, k, v, fc1 of `layer`, in W_in's row order.
std::array<FusedPart, 4> FusedInParts(int layer, int64_t attn, int64_t fc1);

// dense, fc2 of `layer`, in W_out's column order.
std::array<FusedPart, 2> FusedOutParts(int layer, int64_t attn, int64_t fc1);

// b_out of `layer`: dense.bias + fc2.bias in F32 (both replicated across ranks).
absl::StatusOr<std::vector<float>> FusedOutBias(const PhiCheckpoint& ck, int layer);

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_PHI_FUSED_WEIGHTS_H_
