// Collective operations among the ranks of one tensor-parallel worker group. The engine
// and the backends talk to this interface only; Gloo (CPU memory, TCP) and NCCL (GPU
// memory, on the rank's CUDA stream) implement it. Every call is collective: all ranks
// make the same calls in the same order with the same sizes.
//
// Failure contract: no call blocks forever. A peer that died or stalls makes every
// rank's pending call return UNAVAILABLE (peer gone, connection reset) or
// DEADLINE_EXCEEDED (no progress within the group's timeout) within seconds; after
// that the communicator is broken and every later call fails fast with the same
// status. A worker group treats that as fatal (NOT_SERVING, exit non-zero).
#ifndef PHI_SERVICES_WORKER_PARALLEL_COMMUNICATOR_H_
#define PHI_SERVICES_WORKER_PARALLEL_COMMUNICATOR_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"

namespace phi::worker::parallel {

enum class DataType {
  kFloat32,
  kBFloat16,  // NCCL only; Gloo answers UNIMPLEMENTED
};

inline size_t DataTypeSize(DataType dtype) { return dtype == DataType::kBFloat16 ? 2 : 4; }
inline const char* DataTypeName(DataType dtype) { return dtype == DataType::kBFloat16 ? "bfloat16" : "float32"; }

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "gloo-tcp", "nccl", "local" (logs, metrics, benchmark tables).
  virtual std::string name() const = 0;

  // data[i] = sum over ranks of data[i], in place, on every rank. `data` is host memory
  // for Gloo and device memory for NCCL.
  virtual absl::Status AllReduceSum(void* data, size_t count, DataType dtype) = 0;
  absl::Status AllReduceSum(std::span<float> data) {
    return AllReduceSum(data.data(), data.size(), DataType::kFloat32);
  }

  // `bytes` bytes from `root`'s `data` into every other rank's `data`.
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;

  // out[r * bytes_per_rank .. (r+1) * bytes_per_rank) = rank r's `in`, on every rank.
  // `out` holds world_size() * bytes_per_rank bytes and does not overlap `in`.
  virtual absl::Status AllGather(const void* in, void* out, size_t bytes_per_rank) = 0;

  // Returns once every rank has called Barrier (or with the failure status).
  virtual absl::Status Barrier() = 0;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_COMMUNICATOR_H_
