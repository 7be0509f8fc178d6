// The gateway's generation entry point, shared by the gRPC and HTTP front ends: the request
// (GenerateParams), its output (GenerateDelta, GenerateResult), field checks, and GenerationService,
// which starts Generations (generation.h: validate, encode, route, stream, decode, stop
// strings, retry, metrics).
#ifndef PHI_SERVICES_GATEWAY_GENERATION_SERVICE_H_
#define PHI_SERVICES_GATEWAY_GENERATION_SERVICE_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "phi/v1/gateway.pb.h"
#include "phi/v1/tokenizer.pb.h"
#include "services/gateway/blocking_executor.h"
#include "services/gateway/chatml.h"
#include "services/gateway/gateway_metrics.h"
#include "services/gateway/lora_admin.h"
#include "services/gateway/tokenizer_client.h"
#include "services/gateway/worker_pool.h"

namespace phi::gateway {

struct GenerateParams {
  std::string request_id;
  // The model asked for: a base model's name, a LoRA adapter's, or empty (the first base model).
  std::string model;
  // Set by Generation::Prepare from `model`: the base model whose groups may serve the request
  // (empty: any) and the adapter to generate with (GenerateRequest.adapter; empty: the base).
  std::string route_model;
  std::string adapter;
  phi::v1::Prompt prompt;
  // Token ids given directly (OpenAI completions accept them): no Encode call.
  std::vector<int32_t> prompt_ids;
  bool parse_special = false;  // raw completions parse special-token strings
  std::string echo_text;       // returned before the completion (Complete with echo)
  phi::v1::SamplingParams sampling;
  phi::v1::StoppingCriteria stopping;
  bool logprobs = false;
  int32_t top_logprobs = 0;
  bool prompt_logprobs = false;
  Deadline deadline = Deadline::max();
  // Choices (OpenAI n): independent samples of the prompt, encoded and prefilled once; choice i
  // samples with sampling.seed + i when the seed is set (else each draws its own). Range
  // [1, 16]; 0 means 1.
  int32_t n = 1;
  // Sample this many choices and return the n with the highest cumulative logprob (OpenAI and
  // vLLM best_of), renumbered 0..n-1 best first. Range [n, 16]; 0 means n. best_of > n only
  // without `stream`: its deltas reach the sink at the end, just before OnEnd.
  int32_t best_of = 0;
  // The front end streams deltas to its client (refuses best_of > n).
  bool stream = false;
};

struct GenerateDelta {
  // The choice this delta belongs to, in [0, n). Deltas of different choices interleave.
  int32_t index = 0;
  std::string text;
  std::vector<phi::v1::PositionLogprobs> logprobs;
  // The prompt's (the same for every choice): with choice 0's first delta only.
  std::vector<phi::v1::PositionLogprobs> prompt_logprobs;
};

// How one choice ended (GenerateResult::choices).
struct ChoiceResult {
  int32_t index = 0;
  phi::v1::FinishReason finish_reason = phi::v1::FINISH_REASON_UNSPECIFIED;
  uint64_t seed = 0;
  // Tokens through the one that ended the choice (a stop string's last token included).
  int32_t completion_tokens = 0;
  // Sum of the choice's token logprobs (known when logprobs were asked for, or best_of > n).
  double cumulative_logprob = 0;
};

struct GenerateResult {
  std::string request_id;
  std::string model;
  // Choice 0's (choices[0] repeats them).
  phi::v1::FinishReason finish_reason = phi::v1::FINISH_REASON_UNSPECIFIED;
  // The prompt's tokens once, plus the completion tokens of every choice generated (with
  // best_of > n, the discarded ones too: they were generated).
  phi::v1::Usage usage;
  phi::v1::Timings timings;
  uint64_t seed = 0;
  // Every returned choice, index order: n entries (one when n is 1).
  std::vector<ChoiceResult> choices;
  // With prompt_logprobs: the prompt's first token, which has no logprob entry (nothing
  // precedes it), so that echo can list every prompt token without encoding the prompt again.
  // -1: not known.
  int32_t prompt_first_token_id = -1;
  std::string prompt_first_token_text;
};

// Phi-1.5's model card's max_new_tokens: what a request leaving it 0 gets when neither the
// operator nor the model's worker says otherwise.
inline constexpr int32_t kModelCardMaxNewTokens = 256;

struct GenerationServiceOptions {
  // What max_new_tokens 0 gets, over the model's own default (GetStatusResponse
  // .generation_defaults.max_new_tokens); 0: the model's.
  int32_t default_max_new_tokens = 0;
  size_t max_prompt_bytes = 4 << 20;
  // Threads for calls to the tokenizer service (blocking_executor.h); none are started when
  // the tokenizer is in-process (--local-tokenizer).
  int tokenizer_call_threads = 32;
  // A worker attempt with no token by then is cancelled as hung and retried on another group
  // (once, as any failure before the first token); 0: no limit. It counts queueing and prefill
  // on the worker, so it must exceed the slowest first token of a healthy worker at full load.
  double first_token_timeout_seconds = 600;
};

class ChoiceGroup;
class Generation;
class GenerationSink;

// What every generation shares (tokenizer client, worker pool, metrics, options, the threads
// that make tokenizer calls): starts one Generation per request and counts those running. One
// per process, used by both front ends.
class GenerationService {
 public:
  GenerationService(TokenizerClient* tokenizer, WorkerPool* pool, GatewayMetrics* metrics,
                    GenerationServiceOptions options = {});
  ~GenerationService();

  // Starts a generation whose output goes to `sink` (see generation.h), which must live until
  // its OnEnd. With n > 1 (or best_of) the returned Generation stands for all the choices:
  // Cancel cancels them all. Returns at once; OnEnd may already have been called (a request refused at
  // validation). Encoding through the tokenizer service runs on a thread of its own; with
  // --local-tokenizer (or prompt ids given) nothing here blocks.
  std::shared_ptr<Generation> Start(GenerateParams params, GenerationSink* sink);

  // Generations in progress, at any stage (validation, encoding, streaming); shutdown waits for 0.
  int active() const { return active_.load(std::memory_order_acquire); }
  // When the last generation ended (steady clock; epoch if none has): its reply may still be
  // in gRPC's or the HTTP server's buffers for a while after.
  std::chrono::steady_clock::time_point last_finished() const {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_finished_.load(std::memory_order_acquire)));
  }

  // An id for a request that came without one (Start gives one to such requests itself).
  // Unique across gateways too: several gateways share the workers, which refuse an id that is
  // already in flight, so a bare counter ("gw-2" from two gateways) would collide.
  std::string NewRequestId() { return absl::StrCat("gw-", id_prefix_, "-", next_id_.fetch_add(1)); }

  WorkerPool* pool() { return pool_; }
  TokenizerClient* tokenizer() { return tokenizer_; }
  // LoRA adapters loaded through this gateway (both front ends' load / unload calls).
  LoraAdmin* lora() { return lora_.get(); }

 private:
  friend class Generation;
  friend class ChoiceGroup;
  // Runs blocking work (tokenizer calls) off gRPC's threads; `ahead` of the work already
  // waiting (a new request's encode: its TTFT should not wait for other streams' decoding).
  void Offload(std::function<void()> task, bool ahead = false);

  TokenizerClient* tokenizer_;
  WorkerPool* pool_;
  GatewayMetrics* metrics_;
  GenerationServiceOptions options_;
  const std::string id_prefix_;  // random, per gateway process
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int> active_{0};
  std::atomic<std::chrono::steady_clock::rep> last_finished_{0};
  std::unique_ptr<BlockingExecutor> blocking_;  // null when the tokenizer is in-process
  std::unique_ptr<LoraAdmin> lora_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_GENERATION_SERVICE_H_
