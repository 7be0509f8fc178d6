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
  return true;
}

void RequestStream::Cancel() {
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  if (notify_) notify_();
}

void RequestStream::Push(OutputChunk chunk) {
  if (chunk.finished) finished_.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(chunk));
  }
  cv_.notify_one();
}

}  // namespace phi::worker
