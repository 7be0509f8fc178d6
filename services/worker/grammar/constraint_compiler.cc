#include "services/worker/grammar/constraint_compiler.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"
#include "services/worker/grammar/grammar_from_spec.h"
#include "services/worker/grammar/tokenizer_vocab.h"
#include "services/worker/grammar/xgrammar_constraint.h"
#include "xgrammar/xgrammar.h"

namespace phi::worker {
namespace {

// Compiles waiting for a thread, beyond those running; more is a client flooding new grammars.
constexpr size_t kMaxQueuedCompiles = 64;
// Memory of the cached grammars, besides max_cache_entries: on Phi-1.5's vocabulary a 20-field
// schema takes ~0.9 MB, a regex with long bounded repeats a few MB.
constexpr size_t kMaxCacheBytes = size_t{512} << 20;

struct GrammarMetrics {
  explicit GrammarMetrics(metrics::Registry& r)
      : lookups(&r.AddCounter("phi_worker_grammar_cache_lookups_total",
                              "Compiled-grammar cache lookups, by result (hit, miss).", {"result"})),
        hits(&lookups->WithLabels({"hit"})),
        misses(&lookups->WithLabels({"miss"})),
        compile_seconds(&r.AddHistogram("phi_worker_grammar_compile_seconds",
                                        "Time to compile one grammar against the vocabulary "
                                        "(JSON schema, regex, EBNF or choice).",
                                        {}, metrics::LatencyBuckets())
                             .Get()),
        compile_errors(&r.AddCounter("phi_worker_grammar_compile_errors_total",
                                     "Constraints refused: invalid schema, regex, grammar or choice, "
                                     "or a compile past the time limit.")
                            .Get()) {}
  metrics::Family<metrics::Counter>* lookups;
  metrics::Counter* hits;
  metrics::Counter* misses;
  metrics::Histogram* compile_seconds;
  metrics::Counter* compile_errors;
};

// One compile, shared by every caller asking for the same key while it runs.
struct Job {
  std::string key;
  ConstraintSpec spec;
  int waiters = 0;
  bool started = false;
  bool abandoned = false;  // every caller gave up while it ran
  bool done = false;
  std::optional<absl::StatusOr<xgrammar::CompiledGrammar>> result;
};

}  // namespace

class ConstraintCompiler::Impl {
 public:
  Impl(ConstraintCompilerOptions options, xgrammar::TokenizerInfo info)
      : options_(std::move(options)),
        metrics_(options_.registry != nullptr ? *options_.registry : metrics::DefaultRegistry()),
        compiler_(info, /*max_threads=*/options_.compile_threads, /*cache_enabled=*/false) {}

  // The compile threads share the Impl: xgrammar cannot stop a compile, and one that runs for
  // hours (a hostile regex such as 1,000 `a*` in a row) must not hold the worker's exit. On
  // Stop the threads are detached; each leaves after its current compile, and the last one out
  // frees the Impl.
  static void StartThreads(const std::shared_ptr<Impl>& impl) {
    for (int i = 0; i < impl->options_.compile_threads; ++i) {
      std::thread([impl] { impl->WorkLoop(); }).detach();
    }
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
  }

  absl::StatusOr<std::unique_ptr<TokenConstraint>> NewConstraint(const ConstraintSpec& spec) {
    absl::StatusOr<xgrammar::CompiledGrammar> grammar = Lookup(spec);
    if (!grammar.ok()) {
      if (absl::IsInvalidArgument(grammar.status())) metrics_.compile_errors->Inc();
      return grammar.status();
    }
    PHI_ASSIGN_OR_RETURN(auto constraint,
                         XgrammarConstraint::Create(*grammar, options_.vocab_size, options_.eos_token_ids));
    return std::unique_ptr<TokenConstraint>(std::move(constraint));
  }

 private:
  absl::StatusOr<xgrammar::CompiledGrammar> Lookup(const ConstraintSpec& spec);
  absl::StatusOr<std::shared_ptr<Job>> FindOrQueueJob(const ConstraintSpec& spec, const std::string& key);
  void WorkLoop();
  void CacheInsert(const std::string& key, const xgrammar::CompiledGrammar& grammar);

  const ConstraintCompilerOptions options_;
  GrammarMetrics metrics_;
  xgrammar::GrammarCompiler compiler_;

  std::mutex mu_;
  std::condition_variable work_cv_;  // a job was queued, or stopping
  std::condition_variable done_cv_;  // some job finished
  bool stopping_ = false;
  std::deque<std::shared_ptr<Job>> queue_;
  std::unordered_map<std::string, std::shared_ptr<Job>> running_;  // queued or compiling, by key
  int abandoned_running_ = 0;
  // LRU: most recent first.
  struct Entry {
    std::string key;
    xgrammar::CompiledGrammar grammar;
    size_t bytes;
  };
  std::list<Entry> lru_;
  size_t cache_bytes_ = 0;
  std::unordered_map<std::string, decltype(lru_)::iterator> cache_;
};

absl::StatusOr<xgrammar::CompiledGrammar> ConstraintCompiler::Impl::Lookup(const ConstraintSpec& spec) {
  const std::string field = ConstraintFieldName(spec.kind);
  if (absl::Status valid = ValidateConstraintSpec(spec, options_.max_text_bytes); !valid.ok()) return valid;
  const std::string key = ConstraintCacheKey(spec);
  std::unique_lock<std::mutex> lock(mu_);
  if (auto it = cache_.find(key); it != cache_.end()) {
    metrics_.hits->Inc();
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->grammar;
  }
  metrics_.misses->Inc();
  PHI_ASSIGN_OR_RETURN(std::shared_ptr<Job> job, FindOrQueueJob(spec, key));
  ++job->waiters;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(options_.compile_timeout_seconds));
  done_cv_.wait_until(lock, deadline, [&] { return job->done; });
  --job->waiters;
  if (job->done) return *job->result;
  if (job->waiters == 0) {
    if (!job->started) {  // nobody wants it any more: drop it from the queue
      std::erase(queue_, job);
      running_.erase(key);
    } else if (!job->abandoned) {
      job->abandoned = true;  // it finishes in the background; its result is still cached
      ++abandoned_running_;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": took more than ", options_.compile_timeout_seconds,
                                                 " s to compile (the worker's --grammar-compile-timeout-seconds)"));
}

absl::StatusOr<std::shared_ptr<Job>> ConstraintCompiler::Impl::FindOrQueueJob(const ConstraintSpec& spec,
                                                                           const std::string& key) {
  if (auto it = running_.find(key); it != running_.end()) return it->second;
  if (abandoned_running_ >= options_.compile_threads) {
    return absl::ResourceExhaustedError(absl::StrCat(
        ConstraintFieldName(spec.kind), ": every grammar compile thread (", options_.compile_threads,
        ") is busy with a grammar past its time limit; retry later"));
  }
  if (queue_.size() >= kMaxQueuedCompiles) {
    return absl::ResourceExhaustedError(absl::StrCat(ConstraintFieldName(spec.kind), ": ", queue_.size(),
                                                     " grammars are waiting to compile; retry later"));
  }
  auto job = std::make_shared<Job>();
  job->key = key;
  job->spec = spec;
  queue_.push_back(job);
  running_.emplace(key, job);
  work_cv_.notify_one();
  return job;
}

void ConstraintCompiler::Impl::WorkLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    std::shared_ptr<Job> job = queue_.front();
    queue_.pop_front();
    job->started = true;
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<xgrammar::CompiledGrammar> result = CompileConstraintSpec(compiler_, job->spec);
    lock.lock();
    // Stopped while compiling: the metrics registry may be gone; nobody waits for the result.
    if (stopping_) return;
    metrics_.compile_seconds->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (result.ok()) CacheInsert(job->key, *result);
    if (job->abandoned) --abandoned_running_;
    job->result = std::move(result);
    job->done = true;
    running_.erase(job->key);
    done_cv_.notify_all();
  }
}

void ConstraintCompiler::Impl::CacheInsert(const std::string& key, const xgrammar::CompiledGrammar& grammar) {
  const size_t bytes = grammar.MemorySizeBytes() + key.size();
  if (options_.max_cache_entries == 0 || bytes > kMaxCacheBytes || cache_.contains(key)) return;
  lru_.push_front(Entry{key, grammar, bytes});
  cache_.emplace(key, lru_.begin());
  cache_bytes_ += bytes;
  while (lru_.size() > options_.max_cache_entries || cache_bytes_ > kMaxCacheBytes) {
    cache_bytes_ -= lru_.back().bytes;
    cache_.erase(lru_.back().key);
    lru_.pop_back();
  }
}

absl::StatusOr<std::unique_ptr<ConstraintCompiler>> ConstraintCompiler::Create(ConstraintCompilerOptions options) {
  const std::string path = options.tokenizer_json_path;
  if (options.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("grammar compiler: vocab_size ", options.vocab_size, " must be > 0"));
  }
  if (options.eos_token_ids.empty()) {
    return absl::InvalidArgumentError("grammar compiler: the model has no eos token id to end a constrained output");
  }
  if (options.compile_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("grammar compiler: compile_threads ", options.compile_threads, " must be >= 1"));
  }
  if (!(options.compile_timeout_seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--grammar-compile-timeout-seconds ",
                                                   options.compile_timeout_seconds, " must be > 0"));
  }
  for (int32_t id : options.eos_token_ids) {
    if (id < 0 || id >= options.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("grammar compiler: eos id ", id, " is outside [0, ", options.vocab_size, ")"));
    }
  }
  PHI_ASSIGN_OR_RETURN(auto vocab, LoadByteLevelVocab(path, options.eos_token_ids));
  // Ids the model has no row for cannot be sampled: drop them.
  if (vocab.size() > static_cast<size_t>(options.vocab_size)) vocab.resize(options.vocab_size);
  try {
    xgrammar::TokenizerInfo info(vocab, xgrammar::VocabType::BYTE_LEVEL, options.vocab_size,
                                 options.eos_token_ids, /*add_prefix_space=*/false);
    auto impl = std::make_shared<Impl>(std::move(options), std::move(info));
    Impl::StartThreads(impl);
    return std::unique_ptr<ConstraintCompiler>(new ConstraintCompiler(std::move(impl)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
}

ConstraintCompiler::ConstraintCompiler(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConstraintCompiler::~ConstraintCompiler() { impl_->Stop(); }

absl::StatusOr<std::unique_ptr<TokenConstraint>> ConstraintCompiler::NewConstraint(const ConstraintSpec& spec) {
  return impl_->NewConstraint(spec);
}

}  // namespace phi::worker
