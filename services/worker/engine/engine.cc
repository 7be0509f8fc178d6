#include "services/worker/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/logging.h"
#include "services/common/prefix_hash.h"
#include "services/common/request_limits.h"
#include "services/common/status_macros.h"
#include "services/worker/lora/lora_adapter.h"

namespace phi::worker {
namespace {

// Candidates a sampled row may come back as (SequenceStep::num_candidates): covers top_k up
// to 63 and top_logprobs up to 64 (16 + 8 x 64 bytes per rank per row at most).
constexpr int32_t kMaxSampleCandidates = 64;

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// GetStatus' cached_block_hashes are refreshed at most this often (it sorts the cache).
constexpr double kHashRefreshSeconds = 0.25;

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(ModelRunner* runner, EngineOptions options) {
  if (runner == nullptr) return absl::InvalidArgumentError("engine: runner is null");
  const ModelShape& shape = runner->shape();
  if (shape.vocab_size <= 0 || shape.max_position_embeddings <= 1) {
    return absl::InvalidArgumentError(absl::StrCat("engine: model shape has vocab_size ", shape.vocab_size,
                                                   " and max_position_embeddings ",
                                                   shape.max_position_embeddings));
  }
  if (options.num_kv_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache_blocks = ", options.num_kv_blocks, " must be >= 1"));
  }
  if (options.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_block_size = ", options.block_size, " must be >= 1"));
  }
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_tokens = ", options.max_batch_tokens, " must be >= 1"));
  }
  if (options.max_running < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_running = ", options.max_running, " must be >= 1"));
  }
  options.max_running = std::min(options.max_running, options.max_batch_tokens);
  if (options.max_waiting < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_waiting = ", options.max_waiting, " must be >= 0"));
  }
  if (options.max_adapters < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_lora_adapters = ", options.max_adapters, " must be >= 0"));
  }
  if (runner->max_adapter_slots() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("runner: max_adapter_slots() = ", runner->max_adapter_slots(), " must be >= 0"));
  }
  absl::Status st = runner->AllocateKvCache(KvCacheSpec{options.num_kv_blocks, options.block_size});
  if (!st.ok()) return st;
  std::unique_ptr<Engine> engine(new Engine(runner, std::move(options)));
  engine->PublishGauges();
  engine->thread_ = std::thread([e = engine.get()] { e->Loop(); });
  return engine;
}

Engine::Engine(ModelRunner* runner, EngineOptions options)
    : runner_(runner),
      options_(std::move(options)),
      shape_(runner->shape()),
      // Twice the adapters registered at once: room for unloads and loads of new names.
      metrics_(options_.registry != nullptr ? *options_.registry : metrics::DefaultRegistry(),
               2 * options_.max_adapters),
      adapters_(runner->max_adapter_slots(), options_.max_adapters, &metrics_),
      base_metrics_(metrics_.ForAdapter("")),
      blocks_(options_.num_kv_blocks, options_.block_size, options_.enable_prefix_cache),
      scheduler_(&blocks_, options_.max_batch_tokens, options_.max_running) {
  metrics_.kv_blocks_capacity.Set(options_.num_kv_blocks);
}

Engine::~Engine() { Shutdown(); }

void Engine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    admitting_ = false;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Engine::StopAdmitting() { admitting_ = false; }

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Submit(GenerationRequest request) {
  int32_t max_new_tokens = 0;
  absl::Status st = Validate(request, &max_new_tokens);
  if (!st.ok()) return st;

  auto seq = std::make_unique<Sequence>();
  seq->max_new_tokens = max_new_tokens;
  seq->max_new_clamped = request.stopping.max_new_tokens == 0 &&
                         max_new_tokens < options_.default_max_new_tokens;
  seq->prompt_len = static_cast<int32_t>(request.prompt.size());
  seq->tokens = request.prompt;
  seq->arrival_time = NowSeconds();
  if (request.sampling.has_penalties()) seq->penalties.AddPrompt(request.prompt);
  if (request.stopping.min_new_tokens > 0) {
    if (!request.stopping.ignore_eos) seq->min_tokens_ban = options_.eos_token_ids;
    seq->min_tokens_ban.insert(seq->min_tokens_ban.end(), request.stopping.stop_token_ids.begin(),
                               request.stopping.stop_token_ids.end());
  }
  if (request.constraint != nullptr) seq->token_mask.assign(TokenMaskWords(shape_.vocab_size), 0u);
  seq->hash_root = common::PrefixHashRoot(request.adapter);
  seq->adapter_metrics = base_metrics_;

  if (!request.adapter.empty()) {
    // Taken first (NOT_FOUND before the transient refusals below) and given back on any
    // later refusal; from here the request holds its adapter's slot until it ends.
    PHI_ASSIGN_OR_RETURN(const AdapterSlots::Hold hold, adapters_.Acquire(request.adapter));
    seq->adapter_slot = hold.slot;
    seq->adapter_metrics = hold.metrics;
  }
  const int32_t slot = seq->adapter_slot;
  absl::StatusOr<std::shared_ptr<RequestStream>> queued = Enqueue(std::move(request), std::move(seq));
  if (!queued.ok() && slot > 0 && adapters_.Release(slot)) WakeEngine();
  return queued;
}

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Enqueue(GenerationRequest request,
                                                               std::unique_ptr<Sequence> seq) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!admitting_) return absl::UnavailableError("worker is draining or stopped; retry on another worker");
  if (num_waiting_.load() >= options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("worker queue is full (", options_.max_waiting, " requests waiting); retry later"));
  }
  const uint64_t number = next_request_number_++;
  if (request.request_id.empty()) request.request_id = absl::StrCat("req-", number);
  auto existing = by_id_.find(request.request_id);
  std::shared_ptr<RequestStream> in_flight = existing != by_id_.end() ? existing->second.lock() : nullptr;
  if (in_flight != nullptr && !in_flight->finished()) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: '", request.request_id, "' is already in flight"));
  }
  seq->seed = request.seed.has_value()
                  ? *request.seed
                  : common::SplitMix64(static_cast<uint64_t>(seq->arrival_time * 1e9) ^ common::SplitMix64(number));
  seq->request = std::move(request);
  seq->request.sampling.seed = seq->seed;
  seq->stream = std::make_shared<RequestStream>(seq->request.request_id);
  seq->stream->set_cancel_notifier([this] { WakeEngine(); });
  by_id_[seq->request.request_id] = seq->stream;
  std::shared_ptr<RequestStream> stream = seq->stream;
  incoming_.push_back(std::move(seq));
  num_waiting_.fetch_add(1);
  metrics_.requests_waiting.Set(num_waiting_.load());
  cv_.notify_one();
  return stream;
}

absl::Status Engine::Cancel(const std::string& request_id) {
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_id_.find(request_id);
    if (it != by_id_.end()) stream = it->second.lock();
  }
  if (stream == nullptr || stream->finished()) {
    return absl::NotFoundError(absl::StrCat("request_id: no request '", request_id, "' is waiting or running"));
  }
  stream->Cancel();
  return absl::OkStatus();
}

void Engine::ReleaseAdapterSlot(Sequence& seq) {
  if (seq.adapter_slot == 0) return;
  if (adapters_.Release(seq.adapter_slot)) WakeEngine();
  seq.adapter_slot = 0;
}

void Engine::WakeEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_one();
}

absl::Status Engine::AddAdapter(std::shared_ptr<const lora::LoraAdapter> adapter) {
  return adapters_.Add(std::move(adapter));
}

absl::Status Engine::RemoveAdapter(const std::string& name) {
  PHI_RETURN_IF_ERROR(adapters_.Remove(name));
  WakeEngine();  // to empty its slot and forget its blocks when no request uses it
  return absl::OkStatus();
}

std::vector<AdapterInfo> Engine::Adapters() const { return adapters_.List(); }

void Engine::SyncAdapterSlots() {
  AdapterSlots::Work work = adapters_.TakeWork();
  for (uint64_t root : work.forget_roots) {
    const int32_t n = blocks_.ForgetChain(root);
    if (n > 0) PHI_LOG(DEBUG, "lora_blocks_forgotten").Int("blocks", n);
  }
  for (auto& [slot, adapter] : work.installs) {
    const absl::Status st = runner_->SetAdapter(slot, adapter);
    if (st.ok()) {
      if (adapter != nullptr) metrics_.lora_slot_installs.Inc();
      adapters_.Installed(slot, adapter, true);
      continue;
    }
    PHI_LOG(ERROR, "lora_slot_install_failed")
        .Str("adapter", adapter != nullptr ? adapter->name : "")
        .Int("slot", slot)
        .Str("error", st.ToString());
    // Leave the slot empty, whatever the failure left in it.
    if (adapter != nullptr) {
      const absl::Status cleared = runner_->SetAdapter(slot, nullptr);
      if (!cleared.ok()) PHI_LOG(ERROR, "lora_slot_clear_failed").Int("slot", slot).Str("error", cleared.ToString());
    }
    adapters_.Installed(slot, adapter, false);
    if (adapter == nullptr) continue;
    // Its holders all came after the slot was assigned to `adapter`, and none has run yet.
    const absl::Status failed(st.code(), absl::StrCat("LoRA adapter '", adapter->name,
                                                      "' could not be installed in adapter slot ", slot, ": ",
                                                      st.message()));
    std::vector<Sequence*> holders;
    for (const auto& seq : owned_) {
      if (seq->adapter_slot == slot) holders.push_back(seq.get());
    }
    const double now = NowSeconds();
    for (Sequence* seq : holders) {
      Finish(*seq, FinishReason::kError, failed, now, {});
      Retire(seq);
    }
  }
}

EngineStatus Engine::Status(int32_t max_cached_hashes) const {
  EngineStatus s;
  s.waiting = num_waiting_.load();
  s.running = num_running_.load();
  s.kv_blocks_free = kv_free_.load();
  s.kv_blocks_total = options_.num_kv_blocks;
  s.kv_block_size = options_.block_size;
  const uint64_t queries = prefix_queries_.load();
  s.prefix_cache_hit_rate = queries == 0 ? 0.0 : static_cast<double>(prefix_hits_.load()) / queries;
  if (max_cached_hashes > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    s.cached_block_hashes.assign(
        cached_hashes_.begin(),
        cached_hashes_.begin() + std::min<size_t>(cached_hashes_.size(), max_cached_hashes));
  }
  return s;
}

void Engine::PublishGauges() {
  num_running_.store(scheduler_.num_running());
  kv_free_.store(blocks_.num_available());
  metrics_.requests_waiting.Set(num_waiting_.load());
  metrics_.requests_running.Set(scheduler_.num_running());
  metrics_.kv_blocks_used.Set(blocks_.num_used());
}

void Engine::Loop() {
  double last_hash_refresh = 0;
  std::vector<std::unique_ptr<Sequence>> incoming;
  while (true) {
    if (TakeIncoming(&incoming)) {
      FailAllOwned();
      return;
    }
    SyncAdapterSlots();
    const StepPlan plan = PlanStep();
    if (!plan.empty()) {
      absl::Status st = RunStep(plan);
      if (!st.ok()) FailStep(plan, st);
    } else if (!owned_.empty() && scheduler_.num_running() == 0) {
      // Nothing runnable although requests wait: cannot happen while every admitted request
      // fits the cache; yield rather than spin if it ever does.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(1));
    }
    const double t = NowSeconds();
    if (t - last_hash_refresh > kHashRefreshSeconds || owned_.empty()) {  // fresh before idling
      last_hash_refresh = t;
      std::vector<uint64_t> hashes = blocks_.CachedHashes(4096);
      std::lock_guard<std::mutex> lock(mu_);
      cached_hashes_.swap(hashes);
    }
    PublishGauges();
  }
}

bool Engine::TakeIncoming(std::vector<std::unique_ptr<Sequence>>* incoming) {
  bool stop;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stop_ || wake_ || !incoming_.empty() || !owned_.empty(); });
    wake_ = false;
    stop = stop_;
    incoming->swap(incoming_);
  }
  for (auto& seq : *incoming) {
    seq->arrival = next_arrival_++;
    scheduler_.AddWaiting(seq.get());
    owned_.push_back(std::move(seq));
  }
  incoming->clear();
  return stop;
}

void Engine::FailAllOwned() {
  const double now = NowSeconds();
  while (!owned_.empty()) {
    Sequence* seq = owned_.back().get();
    Finish(*seq, FinishReason::kError, absl::UnavailableError("worker is shutting down"), now, {});
    Retire(seq);
  }
  PublishGauges();
}

StepPlan Engine::PlanStep() {
  ReapCancelled();
  StepPlan plan = scheduler_.Schedule();
  metrics_.preemptions.Inc(static_cast<double>(plan.preempted.size()));
  if (!plan.preempted.empty()) num_waiting_.fetch_add(static_cast<int32_t>(plan.preempted.size()));
  for (Sequence* seq : plan.preempted) {
    PHI_LOG(DEBUG, "preempted").Str("request_id", seq->request.request_id).Int("tokens", seq->tokens.size());
  }
  num_waiting_.fetch_sub(static_cast<int32_t>(plan.admitted.size()));
  if (plan.prefix_queries > 0) {
    prefix_queries_.fetch_add(plan.prefix_queries);
    prefix_hits_.fetch_add(plan.prefix_hits);
    metrics_.prefix_cache_queries.Inc(static_cast<double>(plan.prefix_queries));
    metrics_.prefix_cache_hits.Inc(static_cast<double>(plan.prefix_hits));
  }
  PublishGauges();  // before the step: a client that saw a token also sees its request running
  const double now = NowSeconds();
  for (Sequence* seq : plan.admitted) {
    if (seq->first_scheduled_time < 0) {
      seq->first_scheduled_time = now;
      metrics_.queue_time.Observe(now - seq->arrival_time);
      metrics_.prompt_tokens.Inc(seq->prompt_len);
      metrics_.cached_prompt_tokens.Inc(seq->cached_prompt_tokens);
    }
  }
  return plan;
}

void Engine::FailStep(const StepPlan& plan, const absl::Status& st) {
  PHI_LOG(ERROR, "step_failed").Str("error", st.ToString()).Int("batch", plan.seqs.size());
  const double t = NowSeconds();
  for (const ScheduledSeq& s : plan.seqs) {
    // A lost tensor-parallel rank is UNAVAILABLE (retry elsewhere); anything else INTERNAL.
    const absl::StatusCode code =
        st.code() == absl::StatusCode::kUnavailable ? st.code() : absl::StatusCode::kInternal;
    Finish(*s.seq, FinishReason::kError, absl::Status(code, absl::StrCat("forward pass failed: ", st.message())),
           t, {});
    Retire(s.seq);
  }
  if (options_.on_step_failure) options_.on_step_failure(st);
}

void Engine::ReapCancelled() {
  const double now = NowSeconds();
  std::vector<Sequence*> cancelled;
  for (const auto& seq : owned_) {
    if (seq->stream->cancelled()) cancelled.push_back(seq.get());
  }
  for (Sequence* seq : cancelled) {
    Finish(*seq, FinishReason::kCancelled, absl::OkStatus(), now, {});
    Retire(seq);
  }
}

void Engine::BuildBatch(const StepPlan& plan, StepBatch* batch, std::vector<MaskFiller::Job>* masks) {
  batch->seqs.reserve(plan.seqs.size());
  for (const ScheduledSeq& s : plan.seqs) {
    Sequence& seq = *s.seq;
    SequenceStep step;
    step.seq_id = seq.arrival;
    step.tokens = std::span<const int32_t>(seq.tokens).subspan(seq.num_computed, s.num_tokens);
    step.start_pos = seq.num_computed;
    step.block_table = seq.blocks;
    step.all_logits = seq.wants_prompt_logits() && seq.num_computed < seq.prompt_len;
    step.adapter_slot = seq.adapter_slot;
    const bool samples = seq.remaining() == s.num_tokens;
    if (samples && seq.request.constraint != nullptr) {
      masks->push_back({seq.request.constraint.get(), seq.token_mask});
    }
    // A row that only feeds the sampler may come back as top candidates (a vocabulary-split
    // group then gathers a few hundred bytes instead of the whole row); a row the request
    // adjusts (bias, ban, mask) comes back whole.
    if (!step.all_logits && samples) {
      step.num_candidates = CandidatesNeeded(seq.request.sampling, shape_.vocab_size, seq.request.logprobs,
                                             seq.request.logprobs ? seq.request.top_logprobs : 0,
                                             kMaxSampleCandidates, seq.NextLogitAdjust());
      step.sampling = seq.request.sampling;
      step.logprobs = seq.request.logprobs;
    }
    batch->seqs.push_back(step);
  }
}

absl::Status Engine::RunStep(const StepPlan& plan) {
  const double t0 = NowSeconds();
  // Every output row, padding past the tokenizer included: transformers' distribution.
  const int32_t vocab_limit = shape_.vocab_size;
  StepBatch batch;
  std::vector<MaskFiller::Job> masks;
  BuildBatch(plan, &batch, &masks);
  const bool constrained = !masks.empty();
  // The constrained sequences' masks are filled while the forward pass runs.
  mask_filler_.Start(std::move(masks));
  absl::Status st = runner_->Step(batch, &logits_);
  const double t_masks = NowSeconds();
  mask_filler_.Wait();  // before any sequence of the batch can end
  if (constrained) metrics_.mask_wait.Observe(NowSeconds() - t_masks);
  if (!st.ok()) return st;
  if (logits_.first_row.size() != plan.seqs.size() || logits_.num_rows.size() != plan.seqs.size()) {
    return absl::InternalError(absl::StrCat("runner returned logits for ", logits_.first_row.size(),
                                            " sequences, expected ", plan.seqs.size()));
  }

  int64_t prefill_tokens = 0;
  for (const ScheduledSeq& s : plan.seqs) {
    // Every fed token but a decode's: the prompt, and after a preemption the whole history.
    const int32_t start = s.seq->num_computed;
    const int32_t prefill_end = std::max(s.seq->prompt_len, static_cast<int32_t>(s.seq->tokens.size()) - 1);
    prefill_tokens += std::max(0, std::min(start + s.num_tokens, prefill_end) - start);
  }
  metrics_.prefill_tokens.Inc(static_cast<double>(prefill_tokens));

  const int32_t bs = options_.block_size;
  std::vector<Sequence*> done;
  const double now = NowSeconds();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    Sequence& seq = *plan.seqs[i].seq;
    const int32_t start = seq.num_computed;
    const int32_t n = plan.seqs[i].num_tokens;
    seq.num_computed += n;
    while ((seq.num_registered + 1) * bs <= seq.num_computed) {
      blocks_.RegisterFull(seq.blocks[seq.num_registered], seq.BlockHash(seq.num_registered, bs), seq.hash_root);
      ++seq.num_registered;
    }
    if (batch.seqs[i].all_logits) {
      for (int32_t r = 0; r < n; ++r) {
        const int32_t pos = start + r + 1;  // row r predicts the token at pos
        if (pos >= seq.prompt_len) break;
        SampleResult scored = ScoreToken(logits_.Row(logits_.first_row[i] + r), vocab_limit, seq.tokens[pos],
                                         seq.request.top_logprobs);
        seq.prompt_logprobs.push_back({{scored.token_id, scored.logprob}, std::move(scored.top)});
      }
    }
    if (seq.remaining() > 0) continue;  // mid-prefill
    const int32_t top_n = seq.request.logprobs ? seq.request.top_logprobs : 0;
    SampleResult sampled;
    if (logits_.HasCandidates(i)) {
      if (batch.seqs[i].num_candidates <= 0 || i >= logits_.candidates.size()) {
        return absl::InternalError(absl::StrCat("runner returned candidates for sequence ", seq.arrival,
                                                " which asked for its full row"));
      }
      sampled = SampleFromCandidates(logits_.candidates[i], seq.request.sampling,
                                     static_cast<uint64_t>(seq.generated()), seq.request.logprobs, top_n);
    } else {
      sampled = SampleToken(logits_.LastRow(i), vocab_limit, seq.request.sampling,
                            static_cast<uint64_t>(seq.generated()),
                            seq.request.sampling.has_penalties() ? &seq.penalties : nullptr, seq.request.logprobs,
                            top_n, seq.NextLogitAdjust());
    }
    if (AcceptConstrained(seq, sampled.token_id, now)) EmitToken(seq, sampled, now);
    if (seq.finished) done.push_back(&seq);
  }
  for (Sequence* seq : done) Retire(seq);
  steps_.fetch_add(1);
  metrics_.step_duration.Observe(NowSeconds() - t0);
  metrics_.batch_size.Observe(static_cast<double>(plan.seqs.size()));
  return absl::OkStatus();
}

bool Engine::AcceptConstrained(Sequence& seq, int32_t token, double now) {
  if (seq.request.constraint == nullptr) return true;
  absl::Status st = seq.request.constraint->Accept(token);
  if (st.ok()) return true;
  PHI_LOG(ERROR, "constraint_refused_token")
      .Str("request_id", seq.request.request_id)
      .Int("token", token)
      .Str("error", st.ToString());
  Finish(seq, FinishReason::kError,
         absl::InternalError(absl::StrCat("constrained decoding: the grammar refused sampled token ", token, ": ",
                                          st.message())),
         now, {});
  return false;
}

void Engine::EmitToken(Sequence& seq, const SampleResult& sampled, double now) {
  const int32_t token = sampled.token_id;
  seq.tokens.push_back(token);
  if (seq.request.sampling.has_penalties()) seq.penalties.AddOutput(token);
  if (seq.first_token_time < 0) {
    seq.first_token_time = now;
    metrics_.time_to_first_token.Observe(now - seq.arrival_time);
  } else {
    metrics_.inter_token_latency.Observe(now - seq.last_token_time);
  }
  seq.last_token_time = now;
  seq.adapter_metrics->generated_tokens->Inc();

  const StoppingOptions& stopping = seq.request.stopping;
  const bool is_eos = !stopping.ignore_eos && std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(),
                                                        token) != options_.eos_token_ids.end();
  // A finished grammar ends the request as a stop, with ignore_eos too (its eos is not output).
  const bool grammar_done = seq.request.constraint != nullptr && seq.request.constraint->IsTerminated();
  const bool is_stop = is_eos || grammar_done ||
                       std::find(stopping.stop_token_ids.begin(), stopping.stop_token_ids.end(), token) !=
                           stopping.stop_token_ids.end();
  OutputChunk chunk;
  if (!is_stop) {
    chunk.token_ids.push_back(token);
    if (seq.request.logprobs) chunk.logprobs.push_back({{token, sampled.logprob}, sampled.top});
  }
  if (seq.request.prompt_logprobs && !seq.prompt_logprobs_sent) {
    chunk.prompt_logprobs = std::move(seq.prompt_logprobs);
    seq.prompt_logprobs.clear();
    seq.prompt_logprobs_sent = true;
  }
  if (is_stop) {
    Finish(seq, FinishReason::kStop, absl::OkStatus(), now, std::move(chunk));
  } else if (seq.generated() >= seq.max_new_tokens) {
    Finish(seq, seq.max_new_clamped ? FinishReason::kContextLength : FinishReason::kLength, absl::OkStatus(), now,
           std::move(chunk));
  } else {
    seq.stream->Push(std::move(chunk));
  }
}

void Engine::Finish(Sequence& seq, FinishReason reason, absl::Status status, double now, OutputChunk chunk) {
  if (seq.finished) return;
  seq.finished = true;
  chunk.finished = true;
  chunk.finish_reason = reason;
  chunk.status = std::move(status);
  chunk.prompt_tokens = seq.prompt_len;
  chunk.completion_tokens = seq.generated();
  chunk.cached_prompt_tokens = std::max(0, seq.cached_prompt_tokens);
  chunk.seed = seq.seed;
  RequestTimings& t = chunk.timings;
  t.total_seconds = now - seq.arrival_time;
  if (seq.first_scheduled_time >= 0) {
    t.queue_seconds = seq.first_scheduled_time - seq.arrival_time;
  } else {
    t.queue_seconds = t.total_seconds;
  }
  if (seq.first_token_time >= 0) {
    t.prefill_seconds = seq.first_token_time - seq.first_scheduled_time;
    t.decode_seconds = seq.last_token_time - seq.first_token_time;
    t.time_to_first_token_seconds = seq.first_token_time - seq.arrival_time;
  }
  seq.adapter_metrics->finished[static_cast<size_t>(reason)]->Inc();
  metrics_.e2e_latency.Observe(t.total_seconds);
  // The adapter slot goes back before the client sees the end, so that its next request finds
  // the slot idle. The sequence is retired before the next step: the slot is not changed
  // under it (slots are installed only between steps).
  ReleaseAdapterSlot(seq);
  seq.stream->Push(std::move(chunk));
}

void Engine::Retire(Sequence* seq) {
  if (!seq->running) {
    // Still waiting (never admitted, or preempted): it counted as waiting.
    num_waiting_.fetch_sub(1);
  }
  scheduler_.Remove(seq);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_id_.find(seq->request.request_id);
    if (it != by_id_.end() && it->second.lock() == seq->stream) by_id_.erase(it);
  }
  ReleaseAdapterSlot(*seq);
  auto it = std::find_if(owned_.begin(), owned_.end(), [&](const auto& p) { return p.get() == seq; });
  if (it != owned_.end()) {
    std::swap(*it, owned_.back());
    owned_.pop_back();
  }
}

}  // namespace phi::worker
