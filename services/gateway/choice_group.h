// The n choices of one request (OpenAI n and best_of): one child Generation per choice, all
// started on the same worker group at the same moment with the request's encoded prompt (the
// worker prefills a prompt that identical requests share once), seeds seed + i, request ids
// "<id>-<i>". Their deltas reach the request's sink with their choice index, one call at a
// time; with best_of > n they are held until every choice has ended and the n with the
// highest cumulative logprob are returned, best first. One choice failing fails the request
// and cancels the others.
#ifndef PHI_SERVICES_GATEWAY_CHOICE_GROUP_H_
#define PHI_SERVICES_GATEWAY_CHOICE_GROUP_H_

#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "services/gateway/generation.h"

namespace phi::gateway {

class ChoiceGroup : public std::enable_shared_from_this<ChoiceGroup> {
 public:
  // `request`: the request's Generation, prepared (prompt encoded, params complete, n and
  // best_of normalized); it gets the outcome through FinishChoices.
  explicit ChoiceGroup(std::shared_ptr<Generation> request);
  ~ChoiceGroup();

  // Starts every choice on `group`.
  void Start(std::shared_ptr<WorkerGroup> group);
  // Cancels every choice (the request ends CANCELLED). Thread-safe, any time.
  void Cancel();

 private:
  class ChoiceSink;

  void OnChoiceDelta(int index, GenerateDelta&& delta);
  void OnChoiceEnd(int index, const absl::Status& status, GenerateResult&& result);
  // The request's result once every choice has ended well: usage summed, best_of applied
  // (queues the chosen choices' held deltas). Called under mu_.
  GenerateResult Result();
  // Hands what is queued to the request's sink, one call at a time; the thread that finds
  // nobody delivering delivers (no lock is held during a sink call: a sink may cancel).
  void Deliver();

  std::shared_ptr<Generation> request_;  // released once the end is delivered
  GenerationSink* const sink_;
  const int n_;        // choices returned
  const int best_of_;  // choices generated
  const bool client_logprobs_;
  std::vector<std::unique_ptr<ChoiceSink>> sinks_;
  std::vector<std::shared_ptr<Generation>> choices_;

  std::mutex mu_;
  std::deque<GenerateDelta> queue_;
  std::vector<std::vector<GenerateDelta>> held_;  // best_of > n: each choice's deltas
  std::vector<GenerateResult> ends_;
  int ended_ = 0;
  bool first_delta_ = true;
  double ttft_ = 0;
  absl::Status failure_;  // the first choice to fail
  bool end_queued_ = false;
  bool delivering_ = false;
  bool end_delivered_ = false;
  GenerateResult result_;  // once end_queued_
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_CHOICE_GROUP_H_
