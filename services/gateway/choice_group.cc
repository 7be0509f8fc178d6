#include "services/gateway/choice_group.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace phi::gateway {

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

// What one choice's Generation reports, tagged with the choice.
class ChoiceGroup::ChoiceSink final : public GenerationSink {
 public:
  ChoiceSink(ChoiceGroup* group, int index) : group_(group), index_(index) {}
  void OnDelta(GenerateDelta&& delta) override { group_->OnChoiceDelta(index_, std::move(delta)); }
  void OnEnd(const absl::Status& status, GenerateResult&& result) override {
    group_->OnChoiceEnd(index_, status, std::move(result));
  }

 private:
  ChoiceGroup* const group_;
  const int index_;
};

ChoiceGroup::ChoiceGroup(std::shared_ptr<Generation> request)
    : request_(std::move(request)),
      sink_(request_->sink_),
      n_(request_->params_.n),
      best_of_(request_->params_.best_of),
      client_logprobs_(request_->params_.logprobs) {
  if (best_of_ > n_) held_.resize(best_of_);
  ends_.resize(best_of_);
}

ChoiceGroup::~ChoiceGroup() = default;

void ChoiceGroup::Start(std::shared_ptr<WorkerGroup> group) {
  const GenerateParams& p = request_->params_;
  std::vector<std::shared_ptr<Generation>> choices;
  for (int i = 0; i < best_of_; ++i) {
    sinks_.push_back(std::make_unique<ChoiceSink>(this, i));
    GenerateParams c = p;
    c.request_id = absl::StrCat(p.request_id, "-", i);
    c.n = 1;
    c.best_of = 1;
    c.prompt_ids.clear();
    // Generation::Prepare gave the request a seed when it had none.
    c.sampling.set_seed(p.sampling.seed() + static_cast<uint64_t>(i));
    c.logprobs = p.logprobs || best_of_ > n_;  // best_of ranks by the choices' logprobs
    c.prompt_logprobs = p.prompt_logprobs && i == 0;
    choices.push_back(std::make_shared<Generation>(request_->service_, std::move(c), sinks_.back().get()));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    choices_ = choices;
  }
  // One after the other without waiting: the worker sees them arrive together.
  std::shared_ptr<ChoiceGroup> keep = shared_from_this();
  for (auto& c : choices) c->StartChoice(request_->ids_, request_->result_.model, group);
}

void ChoiceGroup::Cancel() {
  std::vector<std::shared_ptr<Generation>> choices;
  {
    std::lock_guard<std::mutex> l(mu_);
    choices = choices_;
  }
  for (auto& c : choices) c->Cancel();
}

void ChoiceGroup::OnChoiceDelta(int index, GenerateDelta&& delta) {
  std::shared_ptr<ChoiceGroup> keep = shared_from_this();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!failure_.ok() || !request_) return;  // the request fails: no more output
    if (first_delta_) {
      // The request's first token (any choice's): TTFT is per client request.
      first_delta_ = false;
      const double ttft = Now() - request_->t_start_;
      request_->model_metrics_.ttft->Observe(ttft);
      ttft_ = ttft;
    }
    if (!held_.empty()) {
      held_[index].push_back(std::move(delta));
      return;
    }
    delta.index = index;
    queue_.push_back(std::move(delta));
  }
  Deliver();
}

void ChoiceGroup::OnChoiceEnd(int index, const absl::Status& status, GenerateResult&& result) {
  std::shared_ptr<ChoiceGroup> keep = shared_from_this();
  std::vector<std::shared_ptr<Generation>> cancel;
  {
    std::lock_guard<std::mutex> l(mu_);
    ++ended_;
    if (!status.ok() && failure_.ok()) {
      failure_ = status;
      cancel = choices_;
    } else if (status.ok()) {
      ends_[index] = std::move(result);
    }
    if (ended_ == best_of_) {
      if (failure_.ok()) result_ = Result();
      end_queued_ = true;
    }
  }
  // Outside the lock: a cancelled choice may end on this thread.
  for (auto& c : cancel) c->Cancel();
  Deliver();
}

GenerateResult ChoiceGroup::Result() {
  std::vector<int> order(best_of_);
  std::iota(order.begin(), order.end(), 0);
  if (best_of_ > n_) {
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return ends_[a].choices[0].cumulative_logprob > ends_[b].choices[0].cumulative_logprob;
    });
    order.resize(n_);
  }
  GenerateResult r;
  const GenerateResult& first = ends_[0];
  r.request_id = request_->params_.request_id;
  r.model = first.model;
  r.timings = first.timings;
  r.timings.set_time_to_first_token_seconds(ttft_);
  r.prompt_first_token_id = first.prompt_first_token_id;
  r.prompt_first_token_text = first.prompt_first_token_text;
  int32_t completion = 0;
  for (const GenerateResult& e : ends_) completion += e.usage.completion_tokens();
  r.usage.set_prompt_tokens(static_cast<int32_t>(request_->ids_.size()));
  r.usage.set_completion_tokens(completion);
  r.usage.set_cached_prompt_tokens(first.usage.cached_prompt_tokens());
  // The prompt's logprobs came with choice 0's first delta; they go out with the first
  // returned choice's.
  std::vector<phi::v1::PositionLogprobs> prompt_logprobs;
  if (!held_.empty()) {
    for (GenerateDelta& d : held_[0]) {
      for (auto& p : d.prompt_logprobs) prompt_logprobs.push_back(std::move(p));
      d.prompt_logprobs.clear();
    }
  }
  for (int k = 0; k < static_cast<int>(order.size()); ++k) {
    ChoiceResult c = ends_[order[k]].choices[0];
    c.index = k;
    r.choices.push_back(c);
    if (held_.empty()) continue;
    if (k == 0 && !prompt_logprobs.empty()) {
      GenerateDelta d;
      d.prompt_logprobs = std::move(prompt_logprobs);
      queue_.push_back(std::move(d));
    }
    for (GenerateDelta& d : held_[order[k]]) {
      d.index = k;
      if (!client_logprobs_) d.logprobs.clear();  // asked for the ranking only
      if (d.text.empty() && d.logprobs.empty() && d.prompt_logprobs.empty()) continue;
      queue_.push_back(std::move(d));
    }
  }
  r.finish_reason = r.choices[0].finish_reason;
  r.seed = r.choices[0].seed;
  return r;
}

void ChoiceGroup::Deliver() {
  std::shared_ptr<ChoiceGroup> keep = shared_from_this();
  std::unique_lock<std::mutex> l(mu_);
  if (delivering_) return;  // the thread delivering now will take what was queued
  delivering_ = true;
  for (;;) {
    if (!queue_.empty()) {
      GenerateDelta d = std::move(queue_.front());
      queue_.pop_front();
      l.unlock();
      sink_->OnDelta(std::move(d));
      l.lock();
    } else if (end_queued_ && !end_delivered_) {
      end_delivered_ = true;
      std::shared_ptr<Generation> request = std::move(request_);
      const absl::Status status = failure_;
      GenerateResult result = std::move(result_);
      l.unlock();
      request->FinishChoices(status, std::move(result));
      l.lock();
    } else {
      break;
    }
  }
  delivering_ = false;
}

}  // namespace phi::gateway
