#include "services/gateway/generation.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <grpcpp/alarm.h>

#include "absl/strings/str_cat.h"
#include "services/common/address_redaction.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/gateway/choice_group.h"
#include "services/gateway/request_validation.h"

namespace phi::gateway {

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// What max_new_tokens 0 gets (clamped to the context by the caller): the operator's
// --default-max-new-tokens when set, else the model's (generation_config.json's, else the
// worker's 256), else 256 for a worker that reports none.
int32_t DefaultMaxNewTokens(const GenerationServiceOptions& options, const ModelSummary& model) {
  if (options.default_max_new_tokens > 0) return options.default_max_new_tokens;
  if (model.default_max_new_tokens > 0) return model.default_max_new_tokens;
  return kModelCardMaxNewTokens;
}

// "'phi-1_5', 'phi-1_5-dpo'" for a NOT_FOUND message: the base models and adapters served, at
// most 16 named.
std::string ServedNames(const std::vector<ModelSummary>& models) {
  constexpr size_t kMaxNamed = 16;
  std::string out;
  for (size_t i = 0; i < models.size() && i < kMaxNamed; ++i) absl::StrAppend(&out, i ? ", '" : "'", models[i].name, "'");
  if (models.size() > kMaxNamed) absl::StrAppend(&out, " and ", models.size() - kMaxNamed, " more");
  return out;
}

// Clients never learn internal addresses: they see a group by its place in the pool ("worker
// group 2", in --workers order or as resolved), the logs carry the address.
// "no ready worker group (2 groups: 1 unreachable, 1 not ready)"; the log line keeps the addresses.
absl::Status NoReadyGroup(const WorkerPool& pool) {
  PHI_LOG(WARNING, "no_ready_worker_group").Str("groups", pool.Describe());
  return absl::UnavailableError(absl::StrCat("no ready worker group (", pool.DescribeForClients(), ")"));
}

absl::Status ClientCancelled() { return absl::CancelledError("the client cancelled the request"); }

// A seed for a request that came without one: drawn here so that the response can report it
// even when a stop string ends the stream before the worker's last message (which has it).
uint64_t DrawSeed() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng() >> 1;  // below 2^63: clients that read it as a signed integer see it as is
}

}  // namespace

// A worker message and when it arrived (the TTFT and inter-token metrics use arrival times:
// with remote decoding a message may wait for the tokenizer's answer to the ones before it).
struct Generation::WorkerMessage {
  phi::v1::GenerateResponse message;
  double arrived = 0;
};

// One attempt's Generate stream. Holds itself (and its Generation) until gRPC calls OnDone.
// With in-process decoding each message is handled in OnReadDone, on gRPC's thread. When
// decoding calls the tokenizer service, the stream keeps reading into an inbox that one task
// at a time drains on the blocking executor: everything that arrived during a tokenizer round
// trip goes out in the next one (one round trip per batch of messages, not per token), and
// gRPC's threads never wait on the tokenizer.
class Generation::WorkerStream : public grpc::ClientReadReactor<phi::v1::GenerateResponse> {
 public:
  WorkerStream(std::shared_ptr<Generation> generation, phi::v1::GenerateRequest req, bool offload)
      : generation_(std::move(generation)), req_(std::move(req)), offload_(offload) {}

  // first_token_timeout > 0: a stream with no message by then is cancelled as hung.
  void Start(std::shared_ptr<WorkerStream> self, phi::v1::WorkerService::Stub* stub, double first_token_timeout) {
    if (first_token_timeout > 0) {
      // The alarm holds the stream weakly: it must not keep a finished stream alive.
      alarm_.Set(std::chrono::system_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(first_token_timeout * 1e6)),
                 [weak = std::weak_ptr<WorkerStream>(self)](bool fired) {
                   std::shared_ptr<WorkerStream> s = fired ? weak.lock() : nullptr;
                   int waiting = kWaiting;
                   if (s && s->progress_.compare_exchange_strong(waiting, kHung)) s->ctx_.TryCancel();
                 });
    }
    self_ = std::move(self);
    stub->async()->Generate(&ctx_, &req_, this);
    StartRead(&resp_.message);
    StartCall();
  }
  grpc::ClientContext* context() { return &ctx_; }
  // The first-token timeout cancelled the stream before any message came.
  bool hung() const { return progress_.load() == kHung; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows with its status
    if (!got_message_) {
      got_message_ = true;
      int waiting = kWaiting;
      // Too late: the stream is being cancelled as hung; what it says now is dropped so that
      // the retry starts from nothing. OnDone follows.
      if (!progress_.compare_exchange_strong(waiting, kGotMessage)) return;
      alarm_.Cancel();
    }
    resp_.arrived = Now();
    if (!offload_) {
      if (generation_->OnWorkerMessages(std::span<WorkerMessage>(&resp_, 1), &ctx_)) StartRead(&resp_.message);
      return;
    }
    bool start = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      inbox_.push_back(std::move(resp_));
      start = !draining_;
      draining_ = true;
    }
    resp_.message.Clear();
    // The first batch goes ahead of other streams' batches: it is this request's TTFT.
    const bool first = !posted_first_;
    posted_first_ = true;
    if (start) generation_->service_->Offload([keep = self_]() mutable { Drain(std::move(keep)); }, first);
    StartRead(&resp_.message);
  }
  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<WorkerStream> keep = std::move(self_);
    if (!offload_) {
      std::shared_ptr<Generation> generation = std::move(generation_);
      return generation->OnWorkerDone(status, hung());
    }
    bool start = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
      done_status_ = status;
      start = !draining_;
      draining_ = true;
    }
    if (start) generation_->service_->Offload([keep = std::move(keep)]() mutable { Drain(std::move(keep)); });
  }

 private:
  // Hands what the inbox holds to the generation, then posts itself again if more came (one
  // batch per task, so that many streams and new requests' encodes share the executor's
  // threads fairly). The end of the stream comes last: OnDone follows every read.
  static void Drain(std::shared_ptr<WorkerStream> self) {
    std::vector<WorkerMessage> batch;
    bool done = false;
    grpc::Status status;
    {
      std::lock_guard<std::mutex> l(self->mu_);
      batch.swap(self->inbox_);
      done = self->done_;
      status = self->done_status_;
    }
    if (!batch.empty() && self->reading_ && !self->generation_->OnWorkerMessages(batch, &self->ctx_)) {
      self->reading_ = false;  // the generation cancelled the call; what still arrives is dropped
    }
    if (done) {
      std::shared_ptr<Generation> generation = std::move(self->generation_);
      generation->OnWorkerDone(status, self->hung());
      return;
    }
    bool again = false;
    {
      std::lock_guard<std::mutex> l(self->mu_);
      again = !self->inbox_.empty() || self->done_;
      if (!again) self->draining_ = false;
    }
    GenerationService* service = self->generation_->service_;
    if (again) service->Offload([self = std::move(self)]() mutable { Drain(std::move(self)); });
  }

  enum { kWaiting, kGotMessage, kHung };

  std::shared_ptr<Generation> generation_;
  std::shared_ptr<WorkerStream> self_;
  grpc::ClientContext ctx_;
  // The first-token timeout and the race between it and the first message (decided once).
  grpc::Alarm alarm_;
  std::atomic<int> progress_{kWaiting};
  bool got_message_ = false;  // touched by OnReadDone only
  phi::v1::GenerateRequest req_;
  WorkerMessage resp_;
  const bool offload_;
  // Remote decoding only.
  std::mutex mu_;
  std::vector<WorkerMessage> inbox_;
  bool draining_ = false;
  bool done_ = false;
  grpc::Status done_status_;
  bool reading_ = true;        // touched by Drain only (one task at a time)
  bool posted_first_ = false;  // touched by OnReadDone only
};

Generation::Generation(GenerationService* service, GenerateParams params, GenerationSink* sink)
    : service_(service), params_(std::move(params)), sink_(sink), t_start_(Now()) {
  service_->active_.fetch_add(1, std::memory_order_acq_rel);
}

Generation::~Generation() {
  service_->last_finished_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                                 std::memory_order_release);
  service_->active_.fetch_sub(1, std::memory_order_acq_rel);
}

void Generation::Cancel() {
  std::shared_ptr<WorkerStream> stream;
  std::shared_ptr<ChoiceGroup> choices;
  {
    std::lock_guard<std::mutex> l(mu_);
    cancelled_ = true;
    stream = stream_;
    choices = choices_;
  }
  // Outside the lock: the cancellation may run the stream's callbacks on this thread.
  if (stream) stream->context()->TryCancel();
  if (choices) choices->Cancel();
}

void Generation::Prepare() {
  if (absl::Status s = ValidateCommon(params_); !s.ok()) return Complete(s);
  result_.request_id = params_.request_id;
  GatewayMetrics* metrics = service_->metrics_;
  absl::StatusOr<ModelSummary> model = FindModel();
  if (!model.ok()) return Complete(model.status());
  result_.model = model->name;
  // A LoRA adapter goes to groups of its base model that have it loaded.
  params_.route_model = model->parent.empty() ? params_.model : model->parent;
  params_.adapter = model->parent.empty() ? "" : model->name;
  model_metrics_ = metrics->ForModel(model->name);
  if (absl::Status s = CheckIds(*model); !s.ok()) return Complete(s);
  // A request that states no temperature samples as the model's generation_config.json says
  // (greedy unless do_sample); an explicit 0 stays greedy.
  if (!params_.sampling.has_temperature()) params_.sampling.set_temperature(model->default_temperature);

  const double t_tok = Now();
  if (params_.prompt_ids.empty()) {
    absl::StatusOr<std::vector<int32_t>> ids =
        service_->tokenizer_->Encode(params_.prompt, params_.parse_special, params_.deadline);
    metrics->tokenizer->Observe(Now() - t_tok);
    if (!ids.ok()) return Complete(ids.status());
    ids_ = std::move(*ids);
  } else {
    ids_ = params_.prompt_ids;
  }
  const double tok_seconds = Now() - t_tok;
  if (ids_.empty()) return Complete(Invalid("prompt: encodes to no tokens"));
  if (absl::Status s = ResolveLengths(*model); !s.ok()) return Complete(s);
  if (!params_.sampling.has_seed()) params_.sampling.set_seed(DrawSeed());
  params_.n = std::max(params_.n, 1);
  params_.best_of = std::max(params_.best_of, params_.n);
  result_.timings.set_tokenizer_seconds(tok_seconds);
  model_metrics_.prompt_tokens->Inc(static_cast<double>(ids_.size()));
  metrics->in_flight->Inc();
  counted_in_flight_ = true;
  if (params_.best_of > 1) return StartChoices();
  if (!StartAttempt(nullptr)) {
    Complete(NoReadyGroup(*service_->pool_));
  }
}

absl::StatusOr<ModelSummary> Generation::FindModel() {
  // Unknown names are NOT_FOUND (OpenAI's model_not_found).
  WorkerPool* pool = service_->pool_;
  std::vector<ModelSummary> models = pool->Models();
  if (models.empty()) {
    pool->RefreshNow();
    models = pool->Models();
  }
  if (models.empty()) return NoReadyGroup(*pool);
  if (params_.model.empty()) return models[0];
  for (const auto& m : models) {
    if (m.name == params_.model) return m;
  }
  return absl::NotFoundError(
      absl::StrCat("model: '", params_.model, "' is not served here (served: ", ServedNames(models), ")"));
}

absl::Status Generation::CheckIds(const ModelSummary& model) {
  const int32_t vocab = model.vocab_size;
  for (size_t i = 0; i < params_.prompt_ids.size(); ++i) {
    if (params_.prompt_ids[i] < 0 || (vocab > 0 && params_.prompt_ids[i] >= vocab)) {
      return Invalid(
          absl::StrCat("prompt[", i, "]: token id ", params_.prompt_ids[i], " is outside [0, ", vocab, ")"));
    }
  }
  if (vocab <= 0) return absl::OkStatus();  // not known: the worker checks the other ids
  const auto& stopping = params_.stopping;
  for (int i = 0; i < stopping.stop_token_ids_size(); ++i) {
    if (stopping.stop_token_ids(i) >= vocab) {
      return Invalid(absl::StrCat("stopping.stop_token_ids[", i, "]: ", stopping.stop_token_ids(i), " is outside [0, ",
                                  vocab, ")"));
    }
  }
  for (const auto& [id, bias] : params_.sampling.logit_bias()) {
    if (id >= vocab) return Invalid(absl::StrCat("sampling.logit_bias[", id, "]: token id outside [0, ", vocab, ")"));
  }
  if (params_.sampling.top_k() > vocab) {
    return Invalid(absl::StrCat("sampling.top_k: ", params_.sampling.top_k(), " is outside [0, ", vocab,
                                "] (the model's vocabulary; 0 means off)"));
  }
  return absl::OkStatus();
}

absl::Status Generation::ResolveLengths(const ModelSummary& model) {
  const int32_t n_prompt = static_cast<int32_t>(ids_.size());
  const int32_t ctx_len = model.max_context_tokens;
  const int32_t default_max = DefaultMaxNewTokens(service_->options_, model);
  auto& stopping = params_.stopping;
  if (ctx_len > 0) {
    if (n_prompt >= ctx_len) {
      return Invalid(absl::StrCat("prompt: ", n_prompt, " tokens, the model's context is ", ctx_len, " (at most ",
                                  ctx_len - 1, " prompt tokens)"));
    }
    if (stopping.max_new_tokens() == 0) {
      stopping.set_max_new_tokens(std::min(default_max, ctx_len - n_prompt));
    } else if (n_prompt + stopping.max_new_tokens() > ctx_len) {
      return Invalid(absl::StrCat("stopping.max_new_tokens: ", stopping.max_new_tokens(), " with ", n_prompt,
                                  " prompt tokens passes the context of ", ctx_len, " (range [1, ",
                                  ctx_len - n_prompt, "])"));
    }
  } else if (stopping.max_new_tokens() == 0) {
    stopping.set_max_new_tokens(default_max);
  }
  // Checked again now that max_new_tokens 0 has its value.
  if (stopping.min_new_tokens() > stopping.max_new_tokens()) {
    return Invalid(absl::StrCat("stopping.min_new_tokens: ", stopping.min_new_tokens(),
                                " is outside [0, max_new_tokens = ", stopping.max_new_tokens(), "]"));
  }
  return absl::OkStatus();
}

void Generation::StartChoices() {
  std::shared_ptr<WorkerGroup> group = service_->pool_->Pick(params_.route_model, params_.adapter, ids_, nullptr);
  if (!group) {
    return Complete(NoReadyGroup(*service_->pool_));
  }
  auto choices = std::make_shared<ChoiceGroup>(shared_from_this());
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    choices_ = choices;
    cancelled = cancelled_;
  }
  choices->Start(std::move(group));
  if (cancelled) choices->Cancel();
}

void Generation::FinishChoices(const absl::Status& status, GenerateResult&& result) {
  const double tok = result_.timings.tokenizer_seconds();
  result_ = std::move(result);
  result_.timings.set_tokenizer_seconds(tok);
  Complete(status);
}

void Generation::StartChoice(std::vector<int32_t> ids, std::string model, std::shared_ptr<WorkerGroup> group) {
  choice_ = true;
  ids_ = std::move(ids);
  result_.request_id = params_.request_id;
  model_metrics_ = service_->metrics_->ForModel(model);
  result_.model = std::move(model);
  first_group_ = std::move(group);
  if (!StartAttempt(nullptr)) {
    Complete(NoReadyGroup(*service_->pool_));
  }
}

bool Generation::StartAttempt(const WorkerGroup* avoid) {
  std::shared_ptr<WorkerGroup> group =
      first_group_ ? std::move(first_group_)
                   : service_->pool_->Pick(params_.route_model, params_.adapter, ids_, avoid);
  first_group_.reset();
  if (!group) return false;
  phi::v1::GenerateRequest req;
  req.set_request_id(params_.request_id);
  req.mutable_prompt_ids()->Add(ids_.begin(), ids_.end());
  *req.mutable_sampling() = params_.sampling;
  *req.mutable_stopping() = params_.stopping;
  req.mutable_stopping()->clear_stop();  // stop strings are the gateway's job
  req.set_logprobs(params_.logprobs);
  req.set_top_logprobs(params_.top_logprobs);
  req.set_prompt_logprobs(params_.prompt_logprobs);
  req.set_adapter(params_.adapter);

  group_ = std::move(group);
  group_->in_flight.fetch_add(1);
  any_token_ = false;
  completion_ = 0;
  cumulative_logprob_ = 0;
  out_ids_.clear();
  result_.seed = params_.sampling.seed();
  t_last_ = 0;
  echo_pending_ = !params_.echo_text.empty();
  stopped_by_string_ = false;
  finished_ = false;
  error_ = absl::OkStatus();
  decoder_ = service_->tokenizer_->StartDecode(/*skip_special=*/true, params_.deadline);
  matcher_.emplace(std::vector<std::string>(params_.stopping.stop().begin(), params_.stopping.stop().end()),
                   params_.stopping.include_stop_str_in_output());

  auto stream =
      std::make_shared<WorkerStream>(shared_from_this(), std::move(req), !service_->tokenizer_->local_decode());
  if (params_.deadline != Deadline::max()) stream->context()->set_deadline(params_.deadline);
  {
    std::lock_guard<std::mutex> l(mu_);
    stream_ = stream;
    // Cancelled before the call exists: start it cancelled, so it ends through OnDone as usual.
    if (cancelled_) stream->context()->TryCancel();
  }
  stream->Start(stream, group_->stub(), service_->options_.first_token_timeout_seconds);
  return true;
}

absl::Status Generation::FillTexts(google::protobuf::RepeatedPtrField<phi::v1::PositionLogprobs>* lps,
                                   bool first_prompt_token) {
  std::vector<int32_t> want;
  auto need = [&](int32_t id) {
    if (!token_texts_.contains(id)) want.push_back(id);
  };
  if (first_prompt_token) need(ids_[0]);
  for (const auto& p : *lps) {
    need(p.token().token_id());
    for (const auto& t : p.top()) need(t.token_id());
  }
  if (!want.empty()) {
    // One DecodeEach for all of them: a few batched RPCs for a whole prompt, none per token.
    absl::StatusOr<std::vector<std::string>> texts = service_->tokenizer_->DecodeEach(want, params_.deadline);
    if (!texts.ok()) return texts.status();
    for (size_t k = 0; k < want.size(); ++k) token_texts_.try_emplace(want[k], std::move((*texts)[k]));
  }
  if (first_prompt_token) {
    result_.prompt_first_token_id = ids_[0];
    result_.prompt_first_token_text = token_texts_.at(ids_[0]);
  }
  for (auto& p : *lps) {
    p.mutable_token()->set_text(token_texts_.at(p.token().token_id()));
    for (auto& t : *p.mutable_top()) t.set_text(token_texts_.at(t.token_id()));
  }
  return absl::OkStatus();
}

void Generation::Emit(GenerateDelta&& d) {
  if (echo_pending_) {
    d.text = params_.echo_text + d.text;
    echo_pending_ = false;
  }
  if (d.text.empty() && d.logprobs.empty() && d.prompt_logprobs.empty()) return;
  sink_->OnDelta(std::move(d));
}

bool Generation::OnWorkerMessages(std::span<WorkerMessage> batch, grpc::ClientContext* ctx) {
  GenerateDelta delta;
  std::vector<int32_t> ids;
  google::protobuf::RepeatedPtrField<phi::v1::PositionLogprobs> logprobs;
  for (WorkerMessage& m : batch) {
    phi::v1::GenerateResponse& resp = m.message;
    error_ = TakePromptLogprobs(&resp, &delta);
    if (!error_.ok()) break;
    if (resp.token_ids_size() > 0) {
      ObserveTokenArrival(m.arrived);
      ids.insert(ids.end(), resp.token_ids().begin(), resp.token_ids().end());
      if (params_.logprobs) {
        for (auto& p : *resp.mutable_logprobs()) *logprobs.Add() = std::move(p);
      }
    }
    if (resp.finish_reason() != phi::v1::FINISH_REASON_UNSPECIFIED) TakeFinish(resp);
  }
  if (error_.ok() && !ids.empty()) error_ = TakeTokens(ids, &logprobs, &delta);
  if (!error_.ok()) {
    ctx->TryCancel();
    return false;
  }
  Emit(std::move(delta));
  if (matcher_->stopped()) {
    stopped_by_string_ = true;
    ctx->TryCancel();  // the rest of the generation is not wanted
    return false;
  }
  return true;
}

absl::Status Generation::TakePromptLogprobs(phi::v1::GenerateResponse* resp, GenerateDelta* delta) {
  // The prompt's entries come with the first message (none for a one-token prompt).
  const bool first_prompt_token = params_.prompt_logprobs && result_.prompt_first_token_id < 0;
  if (resp->prompt_logprobs_size() == 0 && !first_prompt_token) return absl::OkStatus();
  if (absl::Status s = FillTexts(resp->mutable_prompt_logprobs(), first_prompt_token); !s.ok()) return s;
  for (auto& p : *resp->mutable_prompt_logprobs()) delta->prompt_logprobs.push_back(std::move(p));
  return absl::OkStatus();
}

void Generation::ObserveTokenArrival(double arrived) {
  if (!any_token_) {
    any_token_ = true;
    // A choice's first token is not the request's (the group observes that).
    if (!choice_) model_metrics_.ttft->Observe(arrived - t_start_);
    result_.timings.set_time_to_first_token_seconds(arrived - t_start_);
  } else {
    model_metrics_.inter_token->Observe(arrived - t_last_);
  }
  t_last_ = arrived;
}

void Generation::TakeFinish(const phi::v1::GenerateResponse& resp) {
  finished_ = true;
  result_.finish_reason = resp.finish_reason();
  result_.usage = resp.usage();
  // The worker's timings, but the tokenizer time and TTFT as the gateway measured them.
  const double tok = result_.timings.tokenizer_seconds(), ttft = result_.timings.time_to_first_token_seconds();
  result_.timings = resp.timings();
  result_.timings.set_tokenizer_seconds(tok);
  result_.timings.set_time_to_first_token_seconds(ttft);
  result_.seed = resp.seed();
}

absl::Status Generation::TakeTokens(const std::vector<int32_t>& ids,
                                    google::protobuf::RepeatedPtrField<phi::v1::PositionLogprobs>* logprobs,
                                    GenerateDelta* delta) {
  absl::StatusOr<size_t> kept = DecodeAndMatch(ids, &delta->text);
  if (!kept.ok()) return kept.status();
  // Tokens past the one that completed a stop string are neither counted nor returned.
  completion_ += static_cast<int32_t>(*kept);
  if (!params_.logprobs) return absl::OkStatus();
  if (static_cast<size_t>(logprobs->size()) > *kept) {
    logprobs->DeleteSubrange(static_cast<int>(*kept), logprobs->size() - static_cast<int>(*kept));
  }
  for (const auto& p : *logprobs) cumulative_logprob_ += p.token().logprob();
  if (absl::Status s = FillTexts(logprobs); !s.ok()) return s;
  delta->logprobs.assign(std::make_move_iterator(logprobs->begin()), std::make_move_iterator(logprobs->end()));
  return absl::OkStatus();
}

absl::StatusOr<size_t> Generation::DecodeAndMatch(const std::vector<int32_t>& ids, std::string* text) {
  const size_t before = completion_;
  if (matcher_->has_stops()) out_ids_.insert(out_ids_.end(), ids.begin(), ids.end());
  // The first min_new_tokens - 1 tokens cannot end the generation with a stop string (the
  // worker keeps eos and stop ids from ending it that early).
  const int64_t guard_tokens =
      static_cast<int64_t>(params_.stopping.min_new_tokens()) - 1 - static_cast<int64_t>(before);
  const size_t guarded =
      matcher_->has_stops() ? static_cast<size_t>(std::clamp<int64_t>(guard_tokens, 0, ids.size())) : 0;
  auto push = [&](size_t from, size_t to, bool can_stop) -> absl::Status {
    absl::StatusOr<std::string> t =
        from == 0 && to == ids.size() ? decoder_->Push(ids)
                                      : decoder_->Push(std::vector<int32_t>(ids.begin() + from, ids.begin() + to));
    if (!t.ok()) return t.status();
    *text += matcher_->Feed(*t, can_stop);
    return absl::OkStatus();
  };
  if (guarded > 0) {
    if (absl::Status s = push(0, guarded, false); !s.ok()) return s;
  }
  if (guarded < ids.size()) {
    if (absl::Status s = push(guarded, ids.size(), true); !s.ok()) return s;
  }
  if (!matcher_->stopped() || ids.size() - guarded == 1) return ids.size();
  absl::StatusOr<size_t> through = TokensThroughStop(before + guarded);
  if (!through.ok()) return through.status();
  return *through - before;
}

absl::StatusOr<size_t> Generation::TokensThroughStop(size_t from) {
  // The same incremental decoding gives the same text, so the token whose text reaches the
  // match's end is the one the stream decoder completed it with.
  std::unique_ptr<DecodeSession> replay = service_->tokenizer_->StartDecode(/*skip_special=*/true, params_.deadline);
  size_t bytes = 0, through = out_ids_.size();
  if (from > 0) {
    absl::StatusOr<std::string> t = replay->Push(std::vector<int32_t>(out_ids_.begin(), out_ids_.begin() + from));
    if (!t.ok()) return t.status();
    bytes += t->size();
  }
  for (size_t k = from; k < out_ids_.size(); ++k) {
    absl::StatusOr<std::string> t = replay->Push({out_ids_[k]});
    if (!t.ok()) return t.status();
    bytes += t->size();
    if (bytes >= matcher_->match_end()) {
      through = k + 1;
      break;
    }
  }
  replay->Abort();
  return through;
}

absl::Status Generation::AttemptOutcome(const grpc::Status& s, bool hung) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (cancelled_) return ClientCancelled();
  }
  if (hung) {
    return absl::UnavailableError(absl::StrCat(service_->pool_->ClientGroupName(group_.get()), ": no token within ",
                                               service_->options_.first_token_timeout_seconds,
                                               " s (--first-token-timeout-seconds)"));
  }
  if (!error_.ok()) return error_;
  if (stopped_by_string_) {
    // The worker's counts, if its last message came already, include tokens past the stop.
    result_.finish_reason = phi::v1::FINISH_REASON_STOP_STRING;
    result_.usage.set_prompt_tokens(static_cast<int32_t>(ids_.size()));
    result_.usage.set_completion_tokens(completion_);
    return absl::OkStatus();
  }
  if (!s.ok() || !finished_) {
    absl::Status st =
        s.ok() ? absl::UnavailableError("stream ended without a final message") : common::FromGrpcStatus(s);
    if (st.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(absl::StrCat("deadline passed after ", completion_, " tokens"));
    }
    // The request's own fault (a constraint that does not compile, an id past the vocabulary):
    // the worker's message names the field; it reaches the client as is, and no other group
    // is tried.
    if (!any_token_ && st.code() == absl::StatusCode::kInvalidArgument) return st;
    // Anything else may be gRPC's own message, which names the peer: the log keeps it, the
    // client gets it without addresses.
    PHI_LOG(WARNING, "worker_call_failed")
        .Str("request_id", params_.request_id)
        .Str("address", group_->address())
        .Int("completion_tokens", completion_)
        .Str("error", st.ToString());
    const std::string name = service_->pool_->ClientGroupName(group_.get());
    const std::string message = common::RedactAddresses(std::string_view(st.message().data(), st.message().size()));
    if (any_token_) {
      return absl::UnavailableError(absl::StrCat(name, " failed after ", completion_, " tokens: ", message));
    }
    return absl::Status(st.code(), absl::StrCat(name, ": ", message));
  }
  // Flush the decoder and the matcher's held-back text.
  absl::StatusOr<std::string> rest = decoder_->Finish();
  if (!rest.ok()) return rest.status();
  GenerateDelta last;
  last.text = matcher_->Feed(*rest, completion_ >= params_.stopping.min_new_tokens());
  if (matcher_->stopped()) {
    result_.finish_reason = phi::v1::FINISH_REASON_STOP_STRING;
  } else {
    last.text += matcher_->Flush();
  }
  Emit(std::move(last));
  return absl::OkStatus();
}

void Generation::OnWorkerDone(const grpc::Status& status, bool hung) {
  const absl::Status outcome = AttemptOutcome(status, hung);
  if (hung && outcome.code() == absl::StatusCode::kUnavailable) {
    service_->metrics_->hung_attempts->Inc();
    service_->pool_->MarkFailed(group_.get());  // also when there is no retry: no new request waits on it
    PHI_LOG(WARNING, "worker_hung")
        .Str("request_id", params_.request_id)
        .Str("address", group_->address())
        .Num("first_token_timeout_seconds", service_->options_.first_token_timeout_seconds);
  }
  // The decoder is done with when the stream did not finish normally (Finish closed it).
  if (!outcome.ok() || stopped_by_string_) decoder_->Abort();
  decoder_.reset();
  group_->in_flight.fetch_sub(1);
  model_metrics_.completion_tokens->Inc(completion_);
  {
    std::lock_guard<std::mutex> l(mu_);
    stream_.reset();
  }
  const bool retryable = outcome.code() == absl::StatusCode::kUnavailable ||
                         outcome.code() == absl::StatusCode::kResourceExhausted ||
                         outcome.code() == absl::StatusCode::kUnknown;
  if (!outcome.ok() && !any_token_ && retryable && attempt_ == 0 && outcome.code() != absl::StatusCode::kCancelled) {
    if (outcome.code() != absl::StatusCode::kResourceExhausted) service_->pool_->MarkFailed(group_.get());
    PHI_LOG(WARNING, "worker_retry")
        .Str("request_id", params_.request_id)
        .Str("address", group_->address())
        .Str("error", outcome.ToString());
    ++attempt_;
    std::shared_ptr<WorkerGroup> previous = std::move(group_);
    if (StartAttempt(previous.get())) return;
    group_ = std::move(previous);
  }
  Complete(outcome);
}

void Generation::Complete(absl::Status status) {
  if (completed_) return;
  completed_ = true;
  if (status.ok()) {
    if (!choice_) model_metrics_.e2e->Observe(Now() - t_start_);
    result_.timings.set_total_seconds(Now() - t_start_);
    if (result_.choices.empty()) {
      ChoiceResult c;
      c.finish_reason = result_.finish_reason;
      c.seed = result_.seed;
      c.completion_tokens = result_.usage.completion_tokens();
      c.cumulative_logprob = cumulative_logprob_;
      result_.choices.push_back(c);
    }
  }
  if (counted_in_flight_) service_->metrics_->in_flight->Dec();
  sink_->OnEnd(status, std::move(result_));
}

}  // namespace phi::gateway
