// One generation as a chain of gRPC callbacks (the callback API's ClientReadReactor on the
// worker's Generate stream). No thread waits on the worker stream: a token that arrives is
// decoded, matched against the stop strings and handed to the sink on the gRPC thread that
// read it. The sync API woke a handler thread per token per stream (and the handler woke
// gRPC again to write), which was most of the gateway's CPU under load (perf: ~60% in
// futex / context switches at 64 streams).
#ifndef PHI_SERVICES_GATEWAY_GENERATION_H_
#define PHI_SERVICES_GATEWAY_GENERATION_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "phi/v1/worker.grpc.pb.h"
#include "services/gateway/generation_service.h"
#include "services/gateway/stop_matcher.h"

namespace phi::gateway {

// Receives one generation's output: deltas of every choice (GenerateDelta::index), then OnEnd
// with each choice's end in GenerateResult::choices. Calls for one generation never overlap
// (also with n > 1) and come from gRPC threads (or the caller of GenerationService::Start); OnEnd is
// the last call, exactly once. A sink must not block: it queues what it cannot write at once.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  virtual void OnDelta(GenerateDelta&& delta) = 0;
  virtual void OnEnd(const absl::Status& status, GenerateResult&& result) = 0;
};

class ChoiceGroup;

// Validate, encode, pick a worker group, stream, decode, stop strings, retry once on another
// group when the first fails before its first token (an error, a connection dropped by the
// keepalive pings, or no token within GenerationServiceOptions::first_token_timeout_seconds),
// metrics. With n > 1 (or best_of) the request's Generation encodes once and runs one child
// Generation per choice (choice_group.h). Owned through shared_ptr by the caller and by the
// worker stream in flight.
class Generation : public std::enable_shared_from_this<Generation> {
 public:
  Generation(GenerationService* service, GenerateParams params, GenerationSink* sink);
  ~Generation();

  // The client is gone: cancels the worker stream (now or as soon as it starts); the sink
  // then gets OnEnd(CANCELLED) unless it already had OnEnd. Thread-safe, any time.
  void Cancel();

  // Everything before the worker stream; may block on the tokenizer service when the prompt
  // has to be encoded remotely (GenerationService::Start runs it on its own thread then).
  void Prepare();

  // Runs this Generation as one choice of a request (ChoiceGroup): the prompt is `ids`, encoded
  // and checked already, and params() complete (max_new_tokens set); the request's metrics are
  // the group's. The first attempt goes to `group` (all choices on one group, at once).
  void StartChoice(std::vector<int32_t> ids, std::string model, std::shared_ptr<WorkerGroup> group);

 private:
  friend class ChoiceGroup;
  class WorkerStream;
  struct WorkerMessage;

  // Prepare's steps: the model asked for; token ids against its vocabulary (stop ids,
  // logit_bias keys, prompt ids); max_new_tokens from the context, min_new_tokens against it.
  absl::StatusOr<ModelSummary> FindModel();
  absl::Status CheckIds(const ModelSummary& model);
  absl::Status ResolveLengths(const ModelSummary& model);
  // After Prepare, n > 1 or best_of > n: one child Generation per choice.
  void StartChoices();
  // The ChoiceGroup's outcome: the request's result.
  void FinishChoices(const absl::Status& status, GenerateResult&& result);

  // Starts the worker stream on a group (not `avoid`); false when no group is ready.
  bool StartAttempt(const WorkerGroup* avoid);
  // Messages of the worker stream, in order (one, or what arrived during a tokenizer round
  // trip): one decode, one delta. false: stop reading (the call has been cancelled).
  bool OnWorkerMessages(std::span<WorkerMessage> batch, grpc::ClientContext* ctx);
  // OnWorkerMessages' steps for one message: the prompt's logprobs (texts filled in), TTFT and
  // inter-token metrics, the finish reason, usage and timings.
  absl::Status TakePromptLogprobs(phi::v1::GenerateResponse* resp, GenerateDelta* delta);
  void ObserveTokenArrival(double arrived);
  void TakeFinish(const phi::v1::GenerateResponse& resp);
  // And for the batch's generated ids: decoded, matched against the stop strings, counted, and
  // their logprobs (cut at a stop string's end) added to `delta` with their texts.
  absl::Status TakeTokens(const std::vector<int32_t>& ids,
                          google::protobuf::RepeatedPtrField<phi::v1::PositionLogprobs>* logprobs,
                          GenerateDelta* delta);
  // The worker stream ended with `status` (`hung`: cancelled by the first-token timeout):
  // finish, retry or fail.
  void OnWorkerDone(const grpc::Status& status, bool hung);
  // The attempt's outcome once its stream has ended.
  absl::Status AttemptOutcome(const grpc::Status& status, bool hung);
  // Decodes a batch of generated ids and feeds the stop matcher (min_new_tokens applied);
  // appends the text to emit to `text`. Returns how many of the ids count: all, or those
  // through the one that completed a stop string.
  absl::StatusOr<size_t> DecodeAndMatch(const std::vector<int32_t>& ids, std::string* text);
  // After a match: how many of the attempt's ids it takes for the text to reach the end of
  // the stop string (a fresh decode of out_ids_, those from `from` on one at a time).
  absl::StatusOr<size_t> TokensThroughStop(size_t from);
  // Sets the text of every entry's token and top alternatives (and of the prompt's first token
  // when `first_prompt_token`), decoding only ids this request has not seen yet.
  absl::Status FillTexts(google::protobuf::RepeatedPtrField<phi::v1::PositionLogprobs>* lps,
                         bool first_prompt_token = false);
  void Emit(GenerateDelta&& delta);
  void Complete(absl::Status status);

  GenerationService* const service_;
  GenerateParams params_;
  GenerationSink* const sink_;
  GenerateResult result_;
  std::vector<int32_t> ids_;
  // Texts of the ids in this request's logprobs so far: the prompt's top alternatives repeat a
  // lot. Bounded by the request's positions times (1 + top_logprobs).
  std::unordered_map<int32_t, std::string> token_texts_;
  double t_start_ = 0;
  // The request's model's series (set once the model is known).
  ModelMetrics model_metrics_;
  bool counted_in_flight_ = false;
  bool completed_ = false;
  bool choice_ = false;                        // one choice of a ChoiceGroup
  std::shared_ptr<WorkerGroup> first_group_;  // a choice's first attempt goes there

  // The attempt in progress (touched only by the calls of its stream, which never overlap).
  std::shared_ptr<WorkerGroup> group_;
  int attempt_ = 0;
  bool any_token_ = false;
  std::unique_ptr<DecodeSession> decoder_;
  std::optional<StopMatcher> matcher_;
  int32_t completion_ = 0;
  double cumulative_logprob_ = 0;
  std::vector<int32_t> out_ids_;  // the attempt's generated ids (kept when there are stop strings)
  double t_last_ = 0;
  bool echo_pending_ = false;
  bool stopped_by_string_ = false;
  bool finished_ = false;
  absl::Status error_;

  // Cancellation: the flag and the stream in flight (kept alive while Cancel uses it).
  std::mutex mu_;
  bool cancelled_ = false;
  std::shared_ptr<WorkerStream> stream_;
  std::shared_ptr<ChoiceGroup> choices_;  // n > 1: the choices in flight
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_GENERATION_H_
