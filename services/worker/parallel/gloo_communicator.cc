#include "services/worker/parallel/gloo_communicator.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>

#include <signal.h>

#include <cstring>
#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/worker/parallel/gloo_store.h"

namespace phi::worker::parallel {

GlooCommunicator::GlooCommunicator(int rank, int world_size, std::chrono::milliseconds timeout)
    : rank_(rank), world_size_(world_size), timeout_(timeout) {}

GlooCommunicator::~GlooCommunicator() {
  // Close the sockets first so that peers still waiting on us see EOF at once.
  if (context_) {
    try {
      context_->closeConnections();
    } catch (const std::exception&) {
    }
  }
}

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    KvClient* store, int rank, int world_size, const GlooOptions& options) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: rank ", rank, " outside world size ", world_size));
  }
  std::unique_ptr<GlooCommunicator> comm(new GlooCommunicator(rank, world_size, options.timeout));
  // Gloo writes to its sockets without MSG_NOSIGNAL: a write to a peer that just died
  // would raise SIGPIPE and kill this rank instead of failing the collective. Ignore it
  // (unless the program installed its own handler) so the write returns EPIPE.
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, world_size);
    context->setTimeout(options.timeout);
    GlooKvStore kv(store, options.store_prefix, options.timeout);
    context->connectFullMesh(kv, device);
    comm->context_ = std::move(context);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gloo: rank ", rank, " of ", world_size,
                                               " could not connect the mesh (host ",
                                               options.hostname, "): ", e.what()));
  }
  return comm;
}

template <typename Fn>
absl::Status GlooCommunicator::Guard(const char* op, Fn&& fn) {
  if (!broken_.ok()) return broken_;
  try {
    fn();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::string msg = absl::StrCat("gloo ", op, " on rank ", rank_, " of ", world_size_,
                                   " failed (a peer died or stalled): ", what);
    // Gloo says "Timed out" when no byte moved within the timeout; else the peer is gone.
    broken_ = absl::StrContains(what, "imed out") ? absl::DeadlineExceededError(msg)
                                                   : absl::UnavailableError(msg);
    return broken_;
  }
}

absl::Status GlooCommunicator::AllReduceSum(void* data, size_t count, DataType dtype) {
  if (dtype != DataType::kFloat32) {
    return absl::UnimplementedError(
        absl::StrCat("gloo all-reduce: dtype ", DataTypeName(dtype), " unsupported (float32 only)"));
  }
  if (world_size_ == 1 || count == 0) return broken_;
  return Guard("all-reduce", [&] {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(static_cast<float*>(data), count);
    opts.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTimeout(timeout_);
    gloo::allreduce(opts);
  });
}

absl::Status GlooCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast: root ", root, " outside world size ", world_size_));
  }
  if (world_size_ == 1 || bytes == 0) return broken_;
  return Guard("broadcast", [&] {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(static_cast<uint8_t*>(data), bytes);
    opts.setRoot(root);
    opts.setTimeout(timeout_);
    gloo::broadcast(opts);
  });
}

absl::Status GlooCommunicator::AllGather(const void* in, void* out, size_t bytes_per_rank) {
  if (bytes_per_rank == 0) return broken_;
  if (world_size_ == 1) {
    std::memcpy(out, in, bytes_per_rank);
    return broken_;
  }
  return Guard("all-gather", [&] {
    gloo::AllgatherOptions opts(context_);
    opts.setInput(const_cast<uint8_t*>(static_cast<const uint8_t*>(in)), bytes_per_rank);
    opts.setOutput(static_cast<uint8_t*>(out), bytes_per_rank * world_size_);
    opts.setTimeout(timeout_);
    gloo::allgather(opts);
  });
}

absl::Status GlooCommunicator::Barrier() {
  if (world_size_ == 1) return broken_;
  return Guard("barrier", [&] {
    gloo::BarrierOptions opts(context_);
    opts.setTimeout(timeout_);
    gloo::barrier(opts);
  });
}

}  // namespace phi::worker::parallel
