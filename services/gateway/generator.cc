#include "services/gateway/generator.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/gateway/stop_matcher.h"

namespace phi::gateway {

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

void Cancellation::Cancel() {
  cancelled_.store(true);
  std::lock_guard<std::mutex> l(mu_);
  if (ctx_) ctx_->TryCancel();
}

bool Cancellation::Attach(grpc::ClientContext* ctx) {
  std::lock_guard<std::mutex> l(mu_);
  ctx_ = ctx;
  return !cancelled_.load();
}

absl::Status ValidateSampling(const phi::v1::SamplingParams& s) {
  if (!InRange(s.temperature(), 0, 100)) {
    return Invalid(absl::StrCat("sampling.temperature: ", s.temperature(), " is outside [0, 100]"));
  }
  if (!InRange(s.top_p(), 0, 1)) return Invalid(absl::StrCat("sampling.top_p: ", s.top_p(), " is outside (0, 1]"));
  if (s.top_k() < 0) return Invalid(absl::StrCat("sampling.top_k: ", s.top_k(), " is negative (0 means off)"));
  if (!InRange(s.min_p(), 0, 1)) return Invalid(absl::StrCat("sampling.min_p: ", s.min_p(), " is outside [0, 1]"));
  if (!InRange(s.repetition_penalty(), 0, 10)) {
    return Invalid(absl::StrCat("sampling.repetition_penalty: ", s.repetition_penalty(), " is outside [0, 10]"));
  }
  if (!InRange(s.presence_penalty(), -2, 2)) {
    return Invalid(absl::StrCat("sampling.presence_penalty: ", s.presence_penalty(), " is outside [-2, 2]"));
  }
  if (!InRange(s.frequency_penalty(), -2, 2)) {
    return Invalid(absl::StrCat("sampling.frequency_penalty: ", s.frequency_penalty(), " is outside [-2, 2]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateStopping(const phi::v1::StoppingCriteria& s) {
  if (s.max_new_tokens() < 0) {
    return Invalid(absl::StrCat("stopping.max_new_tokens: ", s.max_new_tokens(), " is negative (0 means 256)"));
  }
  if (s.stop_size() > 16) return Invalid(absl::StrCat("stopping.stop: ", s.stop_size(), " strings, at most 16"));
  for (int i = 0; i < s.stop_size(); ++i) {
    if (s.stop(i).empty()) return Invalid(absl::StrCat("stopping.stop[", i, "]: empty"));
    if (s.stop(i).size() > 256) {
      return Invalid(absl::StrCat("stopping.stop[", i, "]: ", s.stop(i).size(), " bytes, at most 256"));
    }
  }
  if (s.stop_token_ids_size() > 64) {
    return Invalid(absl::StrCat("stopping.stop_token_ids: ", s.stop_token_ids_size(), " ids, at most 64"));
  }
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    if (s.stop_token_ids(i) < 0) return Invalid(absl::StrCat("stopping.stop_token_ids[", i, "]: negative id"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCommon(const GenerateParams& p) {
  if (p.request_id.size() > 128) {
    return Invalid(absl::StrCat("request_id: ", p.request_id.size(), " bytes, at most 128"));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > 20) {
    return Invalid(absl::StrCat("top_logprobs: ", p.top_logprobs, " is outside [0, 20]"));
  }
  if (absl::Status s = ValidateSampling(p.sampling); !s.ok()) return s;
  return ValidateStopping(p.stopping);
}

absl::Status Generator::Run(const GenerateParams& in, Cancellation* cancel,
                            const std::function<bool(GenerateDelta&&)>& on_delta, GenerateResult* result) {
  const double t_start = Now();
  active_.fetch_add(1, std::memory_order_acq_rel);
  struct Active {
    Generator* g;
    ~Active() {
      g->last_finished_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_release);
      g->active_.fetch_sub(1, std::memory_order_acq_rel);
    }
  } active{this};
  if (absl::Status s = ValidateCommon(in); !s.ok()) return s;
  GenerateParams params = in;
  if (params.request_id.empty()) params.request_id = absl::StrCat("gw-", next_id_.fetch_add(1));
  result->request_id = params.request_id;

  // Which model: unknown names are NOT_FOUND (OpenAI's model_not_found).
  std::vector<ModelSummary> models = pool_->Models();
  if (models.empty()) {
    pool_->RefreshNow();
    models = pool_->Models();
  }
  if (models.empty()) {
    return absl::UnavailableError(absl::StrCat("no ready worker group (", pool_->Describe(), ")"));
  }
  const ModelSummary* model = &models[0];
  if (!params.model.empty()) {
    model = nullptr;
    for (const auto& m : models) {
      if (m.name == params.model) model = &m;
    }
    if (!model) {
      return absl::NotFoundError(absl::StrCat("model: '", params.model, "' is not served here (served: '",
                                              models[0].name, "')"));
    }
  }
  result->model = model->name;
  for (int i = 0; i < params.stopping.stop_token_ids_size(); ++i) {
    if (model->vocab_size > 0 && params.stopping.stop_token_ids(i) >= model->vocab_size) {
      return Invalid(absl::StrCat("stopping.stop_token_ids[", i, "]: ", params.stopping.stop_token_ids(i),
                                  " is outside [0, ", model->vocab_size, ")"));
    }
  }

  const double t_tok = Now();
  absl::StatusOr<std::vector<int32_t>> ids = params.prompt_ids;
  if (params.prompt_ids.empty()) {
    ids = tokenizer_->Encode(params.prompt, params.parse_special, params.deadline);
    metrics_->tokenizer->Observe(Now() - t_tok);
  } else {
    for (size_t i = 0; i < params.prompt_ids.size(); ++i) {
      if (params.prompt_ids[i] < 0 || (model->vocab_size > 0 && params.prompt_ids[i] >= model->vocab_size)) {
        return Invalid(absl::StrCat("prompt[", i, "]: token id ", params.prompt_ids[i], " is outside [0, ",
                                    model->vocab_size, ")"));
      }
    }
  }
  const double tok_seconds = Now() - t_tok;
  if (!ids.ok()) return ids.status();
  if (ids->empty()) return Invalid("prompt: encodes to no tokens");
  const int32_t n_prompt = static_cast<int32_t>(ids->size());
  const int32_t ctx_len = model->max_context_tokens;
  if (ctx_len > 0) {
    if (n_prompt >= ctx_len) {
      return Invalid(absl::StrCat("prompt: ", n_prompt, " tokens, the model's context is ", ctx_len,
                                  " (at most ", ctx_len - 1, " prompt tokens)"));
    }
    if (params.stopping.max_new_tokens() == 0) {
      params.stopping.set_max_new_tokens(std::min(options_.default_max_new_tokens, ctx_len - n_prompt));
    } else if (n_prompt + params.stopping.max_new_tokens() > ctx_len) {
      return Invalid(absl::StrCat("stopping.max_new_tokens: ", params.stopping.max_new_tokens(), " with ", n_prompt,
                                  " prompt tokens passes the context of ", ctx_len, " (range [1, ",
                                  ctx_len - n_prompt, "])"));
    }
  } else if (params.stopping.max_new_tokens() == 0) {
    params.stopping.set_max_new_tokens(options_.default_max_new_tokens);
  }
  result->timings.set_tokenizer_seconds(tok_seconds);
  metrics_->prompt_tokens->Inc(n_prompt);

  metrics_->in_flight->Inc();
  struct Dec {
    metrics::Gauge* g;
    ~Dec() { g->Dec(); }
  } dec{metrics_->in_flight};

  std::shared_ptr<WorkerGroup> previous;
  absl::Status last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::shared_ptr<WorkerGroup> group = pool_->Pick(params.model, *ids, previous.get());
    if (!group) {
      if (attempt == 0) {
        return absl::UnavailableError(absl::StrCat("no ready worker group (", pool_->Describe(), ")"));
      }
      break;
    }
    bool any_token = false;
    group->in_flight.fetch_add(1);
    last = RunOnce(params, *ids, group.get(), cancel, on_delta, result, &any_token, t_start);
    group->in_flight.fetch_sub(1);
    if (last.ok() || any_token || cancel->cancelled()) break;
    const bool retryable = last.code() == absl::StatusCode::kUnavailable ||
                           last.code() == absl::StatusCode::kResourceExhausted ||
                           last.code() == absl::StatusCode::kUnknown;
    if (!retryable) break;
    if (last.code() != absl::StatusCode::kResourceExhausted) pool_->MarkFailed(group.get());
    PHI_LOG(WARNING, "worker_retry")
        .Str("request_id", params.request_id)
        .Str("address", group->address())
        .Str("error", last.ToString());
    previous = group;
  }
  if (last.ok()) {
    metrics_->e2e->Observe(Now() - t_start);
    result->timings.set_total_seconds(Now() - t_start);
  }
  return last;
}

absl::Status Generator::RunOnce(const GenerateParams& params, const std::vector<int32_t>& ids, WorkerGroup* group,
                                Cancellation* cancel, const std::function<bool(GenerateDelta&&)>& on_delta,
                                GenerateResult* result, bool* any_token, double t_start) {
  phi::v1::GenerateRequest req;
  req.set_request_id(params.request_id);
  req.mutable_prompt_ids()->Add(ids.begin(), ids.end());
  *req.mutable_sampling() = params.sampling;
  *req.mutable_stopping() = params.stopping;
  req.mutable_stopping()->clear_stop();  // stop strings are the gateway's job
  req.set_logprobs(params.logprobs);
  req.set_top_logprobs(params.top_logprobs);
  req.set_prompt_logprobs(params.prompt_logprobs);

  grpc::ClientContext ctx;
  if (params.deadline != Deadline::max()) ctx.set_deadline(params.deadline);
  if (!cancel->Attach(&ctx)) return absl::CancelledError("the client cancelled the request");
  struct Detach {
    Cancellation* c;
    ~Detach() { c->Attach(nullptr); }
  } detach{cancel};

  auto reader = group->stub()->Generate(&ctx, req);
  std::unique_ptr<DecodeSession> decoder = tokenizer_->StartDecode(/*skip_special=*/true, params.deadline);
  StopMatcher matcher({params.stopping.stop().begin(), params.stopping.stop().end()});
  phi::v1::GenerateResponse resp;
  int32_t completion = 0;
  double t_last = 0;
  bool echo_pending = !params.echo_text.empty();
  bool client_gone = false;
  bool stopped_by_string = false;
  bool finished = false;
  absl::Status error;

  auto fill_texts = [&](google::protobuf::RepeatedPtrField<phi::v1::PositionLogprobs>* lps) -> absl::Status {
    std::vector<int32_t> want;
    for (const auto& p : *lps) {
      want.push_back(p.token().token_id());
      for (const auto& t : p.top()) want.push_back(t.token_id());
    }
    auto texts = tokenizer_->DecodeEach(want, params.deadline);
    if (!texts.ok()) return texts.status();
    size_t k = 0;
    for (auto& p : *lps) {
      p.mutable_token()->set_text((*texts)[k++]);
      for (auto& t : *p.mutable_top()) t.set_text((*texts)[k++]);
    }
    return absl::OkStatus();
  };

  auto emit = [&](GenerateDelta&& d) {
    if (echo_pending) {
      d.text = params.echo_text + d.text;
      echo_pending = false;
    }
    if (d.text.empty() && d.logprobs.empty() && d.prompt_logprobs.empty()) return true;
    return on_delta(std::move(d));
  };

  while (reader->Read(&resp)) {
    GenerateDelta delta;
    if (resp.prompt_logprobs_size() > 0) {
      error = fill_texts(resp.mutable_prompt_logprobs());
      if (!error.ok()) break;
      delta.prompt_logprobs.assign(resp.prompt_logprobs().begin(), resp.prompt_logprobs().end());
    }
    if (resp.token_ids_size() > 0) {
      const double now = Now();
      if (!*any_token) {
        *any_token = true;
        metrics_->ttft->Observe(now - t_start);
        result->timings.set_time_to_first_token_seconds(now - t_start);
      } else {
        metrics_->inter_token->Observe(now - t_last);
      }
      t_last = now;
      completion += resp.token_ids_size();
      absl::StatusOr<std::string> text =
          decoder->Push(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()));
      if (!text.ok()) {
        error = text.status();
        break;
      }
      delta.text = matcher.Feed(*text);
      if (params.logprobs) {
        error = fill_texts(resp.mutable_logprobs());
        if (!error.ok()) break;
        delta.logprobs.assign(resp.logprobs().begin(), resp.logprobs().end());
      }
    }
    if (resp.finish_reason() != phi::v1::FINISH_REASON_UNSPECIFIED) {
      finished = true;
      result->finish_reason = resp.finish_reason();
      result->usage = resp.usage();
      double tok = result->timings.tokenizer_seconds(), ttft = result->timings.time_to_first_token_seconds();
      result->timings = resp.timings();
      result->timings.set_tokenizer_seconds(tok);
      result->timings.set_time_to_first_token_seconds(ttft);
      result->seed = resp.seed();
    }
    if (matcher.stopped()) {
      stopped_by_string = true;
      ctx.TryCancel();  // the rest of the generation is not wanted
    }
    if (!emit(std::move(delta))) {
      client_gone = true;
      ctx.TryCancel();
      break;
    }
    if (stopped_by_string) break;
  }
  grpc::Status s = reader->Finish();
  metrics_->completion_tokens->Inc(completion);
  if (client_gone || cancel->cancelled()) {
    decoder->Abort();
    return absl::CancelledError("the client cancelled the request");
  }
  if (!error.ok()) {
    decoder->Abort();
    return error;
  }
  if (stopped_by_string) {
    decoder->Abort();
    result->finish_reason = phi::v1::FINISH_REASON_STOP_STRING;
    result->usage.set_prompt_tokens(static_cast<int32_t>(ids.size()));
    result->usage.set_completion_tokens(completion);
    return absl::OkStatus();
  }
  if (!s.ok() || !finished) {
    decoder->Abort();
    absl::Status st = s.ok() ? absl::UnavailableError("stream ended without a final message")
                             : common::FromGrpcStatus(s);
    if (st.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(absl::StrCat("deadline passed after ", completion, " tokens"));
    }
    if (*any_token) {
      return absl::UnavailableError(absl::StrCat("worker group ", group->address(), " failed after ", completion,
                                                 " tokens: ", st.message()));
    }
    return absl::Status(st.code(), absl::StrCat("worker group ", group->address(), ": ", st.message()));
  }
  // Flush the decoder and the matcher's held-back text.
  absl::StatusOr<std::string> rest = decoder->Finish();
  if (!rest.ok()) return rest.status();
  GenerateDelta last;
  last.text = matcher.Feed(*rest);
  if (matcher.stopped()) {
    result->finish_reason = phi::v1::FINISH_REASON_STOP_STRING;
  } else {
    last.text += matcher.Flush();
  }
  if (!emit(std::move(last))) return absl::CancelledError("the client cancelled the request");
  return absl::OkStatus();
}

}  // namespace phi::gateway
