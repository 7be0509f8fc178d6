#include "services/worker/parallel/step_channel.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"

namespace phi::worker::parallel {
namespace {
// A step message is at most a few MiB (tokens + block tables); more means corruption.
constexpr uint64_t kMaxMessageBytes = 256ull << 20;
}  // namespace

absl::Status StepChannel::Send(const std::string& message) {
  if (comm_->rank() != 0) return absl::FailedPreconditionError("step channel: only rank 0 sends steps");
  const uint64_t size = message.size();
  std::memcpy(frame_.data(), &size, sizeof(size));
  std::memcpy(frame_.data() + 8, message.data(), std::min<size_t>(size, kInlineBytes));
  PHI_RETURN_IF_ERROR(comm_->Broadcast(frame_.data(), kFrameBytes, 0));
  bytes_ += kFrameBytes;
  if (size > kInlineBytes) {
    std::string rest = message.substr(kInlineBytes);
    PHI_RETURN_IF_ERROR(comm_->Broadcast(rest.data(), rest.size(), 0));
    bytes_ += rest.size();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> StepChannel::Receive() {
  if (comm_->rank() == 0) return absl::FailedPreconditionError("step channel: rank 0 does not receive steps");
  PHI_RETURN_IF_ERROR(comm_->Broadcast(frame_.data(), kFrameBytes, 0));
  bytes_ += kFrameBytes;
  uint64_t size = 0;
  std::memcpy(&size, frame_.data(), sizeof(size));
  if (size > kMaxMessageBytes) {
    return absl::DataLossError(absl::StrCat("step channel: frame claims ", size, " bytes (at most ", kMaxMessageBytes, ")"));
  }
  std::string message(frame_.data() + 8, std::min<size_t>(size, kInlineBytes));
  if (size > kInlineBytes) {
    std::string rest(size - kInlineBytes, '\0');
    PHI_RETURN_IF_ERROR(comm_->Broadcast(rest.data(), rest.size(), 0));
    bytes_ += rest.size();
    message += rest;
  }
  return message;
}

}  // namespace phi::worker::parallel
