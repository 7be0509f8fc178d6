// One WorkerService.Generate call on gRPC's callback API: the engine's RequestStream written
// to the client, one message at a time, without a thread of its own.
//
// Who runs what: the engine thread only pushes output and, when the call is idle, queues it
// on the StreamWritePool (RequestStream's output notifier). A pool thread then takes what is
// pending (merged: several tokens when the client reads slower than the engine produces),
// builds the message and starts the write; OnWriteDone (a gRPC thread) takes what arrived
// meanwhile and writes again. The client going away (OnCancel, a failed write) cancels the
// engine request, and the call finishes CANCELLED only once the engine's final chunk has
// arrived, so the engine has let go of the request (no 10 ms cancel poll, no busy loop).
//
// A call whose request needs blocking work first (compiling its grammar) starts pending: it
// has no engine stream until the thread doing that work Attach()es one or Refuse()s the call.
// A client that goes away meanwhile is remembered; Attach then cancels the new stream.
#ifndef PHI_SERVICES_WORKER_SERVICE_GENERATE_CALL_H_
#define PHI_SERVICES_WORKER_SERVICE_GENERATE_CALL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include <grpcpp/grpcpp.h>

#include "phi/v1/worker.pb.h"
#include "services/worker/engine/request.h"
#include "services/worker/service/stream_write_pool.h"

namespace phi::worker {

using GenerateReactor = grpc::ServerWriteReactor<phi::v1::GenerateResponse>;

// The reactor of a call the engine accepted. It owns itself until gRPC's OnDone.
//
// Lifetime: gRPC's reference is self_ (dropped in OnDone); the stream's notifier holds only a
// weak_ptr, and a pool thread holds a strong one just while it runs Pump(). So a notifier
// that fires after the call finished (its task is skipped or finds finishing_ set) never
// touches a deleted reactor, and the reactor is deleted by whoever lets go last: OnDone or a
// pool thread that was still in Pump() (which returns at once once finishing_ is set).
class GenerateCall final : public GenerateReactor, public StreamWritePool::Task {
 public:
  static GenerateReactor* Start(std::shared_ptr<RequestStream> stream, const StreamWritePool& pool);
  // A pending call (see above); the caller hands the returned reference to the thread that
  // must then call Attach or Refuse exactly once.
  static std::shared_ptr<GenerateCall> StartPending();
  static void Attach(const std::shared_ptr<GenerateCall>& call, std::shared_ptr<RequestStream> stream,
                     const StreamWritePool& pool);
  void Refuse(grpc::Status status);
  // The client cancelled or its deadline passed (a pending call's preparer may stop early).
  bool client_gone();

  explicit GenerateCall(std::shared_ptr<RequestStream> stream) : stream_(std::move(stream)) { live_.fetch_add(1); }
  ~GenerateCall() override { live_.fetch_sub(1); }

  // Calls not yet deleted, in this process (tests: every call is deleted after OnDone).
  static int64_t live() { return live_.load(); }

  void Run() override { Pump(); }  // the pool: output arrived while the call was idle
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Starts the next write, or the end of the call, unless a write is in flight (its
  // OnWriteDone pumps again) or the call is ending. gRPC is called outside mu_: it may run
  // OnWriteDone on this thread.
  void Pump();

  static inline std::atomic<int64_t> live_{0};

  std::mutex mu_;
  std::shared_ptr<RequestStream> stream_;  // null while pending; set once, under mu_
  std::shared_ptr<GenerateCall> self_;  // gRPC's reference, see the class comment
  phi::v1::GenerateResponse out_;  // the message being written; changed only when no write is in flight
  bool writing_ = false;      // under mu_
  bool finishing_ = false;    // under mu_: Finish or StartWriteAndFinish started
  bool client_gone_ = false;  // under mu_: OnCancel, or a write failed
};

// A call refused before it reached the engine (not ready, invalid, queue full): finishes at
// once with `status` and deletes itself in OnDone.
GenerateReactor* RefuseGenerate(grpc::Status status);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_GENERATE_CALL_H_
