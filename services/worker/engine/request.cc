#include "services/worker/engine/request.h"

#include <iterator>

namespace phi::worker {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kContextLength: return "context_length";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

bool RequestStream::Next(OutputChunk* out, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return !pending_.empty(); })) {
    return false;
  }
  TakePendingLocked(out);
  return true;
}

bool RequestStream::TryNext(OutputChunk* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_.empty()) {
    output_armed_ = output_notify_ != nullptr;
    return false;
  }
  TakePendingLocked(out);
  return true;
}

void RequestStream::set_output_notifier(std::function<void()> notify) {
  bool call_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    output_notify_ = std::move(notify);
    // The engine may have pushed between Submit() and now: nobody would call the notifier.
    call_now = !pending_.empty();
    output_armed_ = !call_now;
  }
  if (call_now) output_notify_();
}

void RequestStream::TakePendingLocked(OutputChunk* out) {
  *out = std::move(pending_.front());
  pending_.pop_front();
  while (!pending_.empty()) {
    OutputChunk& next = pending_.front();
    out->token_ids.insert(out->token_ids.end(), next.token_ids.begin(), next.token_ids.end());
    out->logprobs.insert(out->logprobs.end(), std::make_move_iterator(next.logprobs.begin()),
                         std::make_move_iterator(next.logprobs.end()));
    out->prompt_logprobs.insert(out->prompt_logprobs.end(),
                                std::make_move_iterator(next.prompt_logprobs.begin()),
                                std::make_move_iterator(next.prompt_logprobs.end()));
    if (next.finished) {
      out->finished = true;
      out->finish_reason = next.finish_reason;
      out->status = next.status;
      out->prompt_tokens = next.prompt_tokens;
      out->completion_tokens = next.completion_tokens;
      out->cached_prompt_tokens = next.cached_prompt_tokens;
      out->timings = next.timings;
      out->seed = next.seed;
    }
    pending_.pop_front();
  }
}

void RequestStream::Cancel() {
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  if (notify_) notify_();
}

void RequestStream::Push(OutputChunk chunk) {
  if (chunk.finished) finished_.store(true, std::memory_order_release);
  bool notify_output = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(chunk));
    notify_output = output_armed_;
    output_armed_ = false;
  }
  cv_.notify_one();  // no futex call when nobody waits in Next()
  // output_notify_ is not written again once armed, so it is safe to call outside mu_ (the
  // notifier takes its own locks; calling it under mu_ would order them against TryNext's).
  if (notify_output) output_notify_();
}

}  // namespace phi::worker
