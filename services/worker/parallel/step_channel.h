// Moves step messages from the leader (rank 0) to every follower over the host
// communicator. One broadcast of a fixed frame carries the length and, for the common
// small message (a decode step of a few dozen sequences), the whole payload; a larger
// message (long prefill chunks) follows in a second broadcast. The frame size trades a
// round trip per step against bytes: 4 KiB on loopback costs no more than 16 bytes.
#ifndef PHI_SERVICES_WORKER_PARALLEL_STEP_CHANNEL_H_
#define PHI_SERVICES_WORKER_PARALLEL_STEP_CHANNEL_H_

#include <string>

#include "absl/status/statusor.h"
#include "services/worker/parallel/communicator.h"

namespace phi::worker::parallel {

class StepChannel {
 public:
  static constexpr size_t kFrameBytes = 4096;
  static constexpr size_t kInlineBytes = kFrameBytes - 8;

  explicit StepChannel(Communicator* comm) : comm_(comm) {}

  // Rank 0 only.
  absl::Status Send(const std::string& message);
  // Ranks 1..N-1: blocks until the leader sends (or the communicator's timeout).
  absl::StatusOr<std::string> Receive();

  // Bytes moved by Send / Receive so far (frames included): the benchmark's numbers.
  uint64_t bytes() const { return bytes_; }

 private:
  Communicator* comm_;
  std::string frame_ = std::string(kFrameBytes, '\0');
  uint64_t bytes_ = 0;
};

}  // namespace phi::worker::parallel

#endif  // PHI_SERVICES_WORKER_PARALLEL_STEP_CHANNEL_H_
