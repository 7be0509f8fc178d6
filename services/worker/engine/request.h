// A generation request as the engine sees it (token ids in, token ids out), and the stream
// through which its output leaves the engine thread. Transport-free: the gRPC service
// converts phi.v1 messages to and from these.
#ifndef PHI_SERVICES_WORKER_ENGINE_REQUEST_H_
#define PHI_SERVICES_WORKER_ENGINE_REQUEST_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/worker/engine/sampler.h"
#include "services/worker/engine/token_constraint.h"

namespace phi::worker {

enum class FinishReason {
  kNone = 0,
  kStop,           // an eos id or a stop token id was produced
  kLength,         // max_new_tokens reached
  kCancelled,      // the client cancelled or its deadline passed
  kContextLength,  // the model's context is full
  kError,          // the step failed; OutputChunk::status says why
};
const char* FinishReasonName(FinishReason reason);  // "stop", "length", ... (metric labels)

struct StoppingOptions {
  int32_t max_new_tokens = 0;          // 0: the engine's default, clamped to the context
  std::vector<int32_t> stop_token_ids;  // in addition to the model's eos ids
  bool ignore_eos = false;
  // Eos and stop token ids cannot be chosen before this many tokens (vLLM's min_tokens).
  int32_t min_new_tokens = 0;
};

struct GenerationRequest {
  std::string request_id;               // empty: the engine assigns one
  std::vector<int32_t> prompt;
  SamplingOptions sampling;
  std::optional<uint64_t> seed;         // unset: the engine picks one (reported at the end)
  StoppingOptions stopping;
  bool logprobs = false;
  int32_t top_logprobs = 0;             // [0, 20]
  bool prompt_logprobs = false;
  int32_t priority = 0;                 // [-100, 100]; higher is admitted first
  // Added to raw logits before sampling (OpenAI logit_bias); ids in [0, vocab), bias in
  // [-100, 100], at most 1024 entries. Logprobs stay the model's own.
  std::vector<TokenBias> logit_bias;
  // Constrained decoding (null: free). Owned by this request's sequence.
  std::shared_ptr<TokenConstraint> constraint;
  // A LoRA adapter added with Engine::AddAdapter, by name; empty: the base model.
  std::string adapter;
};

struct PositionLogprob {
  TokenLogprobValue token;
  std::vector<TokenLogprobValue> top;
};

struct RequestTimings {
  double queue_seconds = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double time_to_first_token_seconds = 0;
  double total_seconds = 0;
};

// Everything produced since the consumer last looked: usually one token, more when the
// consumer is slower than the engine. The last chunk has `finished` set.
struct OutputChunk {
  std::vector<int32_t> token_ids;  // the stop token that ends a request is not included
  std::vector<PositionLogprob> logprobs;         // with logprobs: one per token id
  std::vector<PositionLogprob> prompt_logprobs;  // with prompt_logprobs: in the first chunk
  bool finished = false;
  // Set when finished:
  FinishReason finish_reason = FinishReason::kNone;
  absl::Status status;             // not OK only with kError (or when the engine stops)
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;   // generated tokens, the stop token included
  int32_t cached_prompt_tokens = 0;
  RequestTimings timings;
  uint64_t seed = 0;
};

// The engine thread pushes, one consumer pops. Cancel() may be called from any thread.
// A consumer either blocks in Next() (tests, tools) or, on the callback API, polls with
// TryNext() and is called back through the output notifier when output arrives.
class RequestStream {
 public:
  explicit RequestStream(std::string request_id) : request_id_(std::move(request_id)) {}

  const std::string& request_id() const { return request_id_; }

  // Waits up to `timeout` for output and moves everything pending into *out (merged).
  // Returns false when nothing arrived in time.
  bool Next(OutputChunk* out, absl::Duration timeout);

  // Non-blocking Next(): moves everything pending into *out (merged) and returns true; with
  // nothing pending returns false and arms the output notifier, which the next Push() then
  // calls once (edge-triggered: one call per TryNext() that came back empty, so a consumer
  // that is busy writing costs the engine thread nothing but the push).
  bool TryNext(OutputChunk* out);
  // Set once, by the consumer, before its first TryNext(). Armed at once; called at once (on
  // this thread) when output is already pending. The call runs on the engine thread: it must
  // only hand the stream to another thread, never build or write a message there.
  void set_output_notifier(std::function<void()> notify);

  // Asks the engine to drop the request at its next step (idempotent). The final chunk
  // (finish reason kCancelled) still arrives.
  void Cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // The final chunk has been pushed (the consumer may not have read it yet).
  bool finished() const { return finished_.load(std::memory_order_acquire); }

  // Engine side.
  void Push(OutputChunk chunk);
  void set_cancel_notifier(std::function<void()> notify) { notify_ = std::move(notify); }

 private:
  const std::string request_id_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> finished_{false};
  void TakePendingLocked(OutputChunk* out);  // pending_ non-empty, mu_ held

  std::function<void()> notify_;  // wakes the engine thread; set before the stream is shared
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<OutputChunk> pending_;
  std::function<void()> output_notify_;  // written once under mu_ before output_armed_ is set
  bool output_armed_ = false;            // under mu_
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_REQUEST_H_
