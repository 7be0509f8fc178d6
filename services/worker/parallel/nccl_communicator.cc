#include "services/worker/parallel/nccl_communicator.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"

namespace phi::worker::parallel {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status CudaError(const char* what, cudaError_t err) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

absl::Status NcclError(const char* what, ncclResult_t result, ncclComm_t comm) {
  std::string detail = ncclGetErrorString(result);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') absl::StrAppend(&detail, ": ", last);
  }
  std::string msg = absl::StrCat("nccl ", what, ": ", detail);
  // A remote or system error means a peer or the network is gone: the group is unusable.
  if (result == ncclRemoteError || result == ncclSystemError) return absl::UnavailableError(msg);
  if (result == ncclInvalidArgument || result == ncclInvalidUsage) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

// Polls a non-blocking communicator until its pending init/enqueue left ncclInProgress.
absl::Status WaitNotInProgress(ncclComm_t comm, const char* what, Clock::time_point deadline) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return NcclError(what, r, comm);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return NcclError(what, state, comm);
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("nccl ", what, ": no progress before the timeout (a peer died or stalls)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

ncclDataType_t ToNccl(DataType dtype) {
  return dtype == DataType::kBFloat16 ? ncclBfloat16 : ncclFloat32;
}

}  // namespace

NcclCommunicator::NcclCommunicator(int rank, int world_size, const NcclOptions& options)
    : rank_(rank), world_size_(world_size), options_(options) {}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) {
    // A broken comm may have operations that never finish: abort rather than destroy.
    if (broken_.ok()) {
      ncclCommFinalize(comm_);
      if (!WaitNotInProgress(comm_, "finalize", Clock::now() + options_.timeout).ok()) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    } else {
      ncclCommAbort(comm_);
    }
  }
  if (barrier_scratch_ != nullptr) cudaFree(barrier_scratch_);
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    KvClient* store, int rank, int world_size, const NcclOptions& options) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat("nccl: rank ", rank, " outside world size ", world_size));
  }
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(rank, world_size, options));
  if (cudaError_t err = cudaSetDevice(options.device); err != cudaSuccess) {
    return CudaError(absl::StrCat("nccl: cudaSetDevice(", options.device, ")").c_str(), err);
  }
  ncclUniqueId id;
  if (rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) return NcclError("get unique id", r, nullptr);
    PHI_RETURN_IF_ERROR(store->Set(options.store_key, std::string(id.internal, sizeof(id.internal))));
  } else {
    PHI_ASSIGN_OR_RETURN(std::vector<std::string> missing, store->Wait({options.store_key}, options.timeout));
    if (!missing.empty()) {
      return absl::DeadlineExceededError(absl::StrCat("nccl: rank 0 did not publish '", options.store_key,
                                                      "' within ", options.timeout.count(), " ms"));
    }
    PHI_ASSIGN_OR_RETURN(std::string value, store->Get(options.store_key));
    if (value.size() != sizeof(id.internal)) {
      return absl::InternalError(absl::StrCat("nccl: unique id under '", options.store_key, "' has ",
                                              value.size(), " bytes, expected ", sizeof(id.internal)));
    }
    std::memcpy(id.internal, value.data(), sizeof(id.internal));
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&c->comm_, world_size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) return NcclError("init rank", r, c->comm_);
  if (auto s = WaitNotInProgress(c->comm_, "init rank", Clock::now() + options.timeout); !s.ok()) {
    ncclCommAbort(c->comm_);
    c->comm_ = nullptr;
    return s;
  }
  if (cudaError_t err = cudaMalloc(&c->barrier_scratch_, sizeof(float)); err != cudaSuccess) {
    return CudaError("nccl: barrier scratch", err);
  }
  return c;
}

absl::Status NcclCommunicator::Fail(absl::Status status) {
  if (broken_.ok()) {
    broken_ = absl::Status(status.code(), absl::StrCat("rank ", rank_, " of ", world_size_, ": ", status.message()));
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  return broken_;
}

absl::Status NcclCommunicator::Enqueued(const char* op, ncclResult_t result) {
  if (result != ncclSuccess && result != ncclInProgress) return Fail(NcclError(op, result, comm_));
  // A non-blocking comm may still be enqueuing; the op is on the stream once this clears.
  if (auto s = WaitNotInProgress(comm_, op, Clock::now() + options_.timeout); !s.ok()) return Fail(s);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Finish(const char* op, ncclResult_t result) {
  PHI_RETURN_IF_ERROR(Enqueued(op, result));
  return options_.wait_each_operation ? Synchronize() : absl::OkStatus();
}

absl::Status NcclCommunicator::Synchronize() {
  if (!broken_.ok()) return broken_;
  const auto deadline = Clock::now() + options_.timeout;
  while (true) {
    cudaError_t err = cudaStreamQuery(options_.stream);
    if (err == cudaSuccess) return absl::OkStatus();
    if (err != cudaErrorNotReady) return Fail(CudaError("nccl: stream", err));
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state != ncclSuccess && state != ncclInProgress) return Fail(NcclError("operation", state, comm_));
    if (Clock::now() > deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          "nccl: operations not finished within ", options_.timeout.count(), " ms (a peer died or stalls)")));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

absl::Status NcclCommunicator::AllReduceSum(void* data, size_t count, DataType dtype) {
  if (!broken_.ok()) return broken_;
  if (count == 0) return absl::OkStatus();
  return Finish("all-reduce", ncclAllReduce(data, data, count, ToNccl(dtype), ncclSum, comm_, options_.stream));
}

absl::Status NcclCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (!broken_.ok()) return broken_;
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast: root ", root, " outside world size ", world_size_));
  }
  if (bytes == 0) return absl::OkStatus();
  return Finish("broadcast", ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, options_.stream));
}

absl::Status NcclCommunicator::AllGather(const void* in, void* out, size_t bytes_per_rank) {
  if (!broken_.ok()) return broken_;
  if (bytes_per_rank == 0) return absl::OkStatus();
  return Finish("all-gather", ncclAllGather(in, out, bytes_per_rank, ncclUint8, comm_, options_.stream));
}

absl::Status NcclCommunicator::Barrier() {
  if (!broken_.ok()) return broken_;
  // NCCL has no barrier: a one-element all-reduce, waited for, is one.
  if (auto s = Enqueued("barrier", ncclAllReduce(barrier_scratch_, barrier_scratch_, 1, ncclFloat32,
                                                   ncclSum, comm_, options_.stream));
      !s.ok()) {
    return s;
  }
  return Synchronize();
}

}  // namespace phi::worker::parallel
