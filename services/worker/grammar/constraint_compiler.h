// Grammars compiled against the model's vocabulary, with xgrammar's C++ core: a JSON object,
// a JSON schema, a regex, an EBNF grammar or a choice among strings becomes a compiled
// grammar once per distinct text (a bounded LRU cache with hit/miss metrics), then one
// TokenConstraint per sequence. Compiling runs on the compiler's own threads with a time
// limit, so a pathological grammar costs its caller a clear error, never a stuck worker.
#ifndef PHI_SERVICES_WORKER_GRAMMAR_CONSTRAINT_COMPILER_H_
#define PHI_SERVICES_WORKER_GRAMMAR_CONSTRAINT_COMPILER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/metrics/registry.h"
#include "services/worker/engine/token_constraint.h"

namespace phi::worker {

// What a request asks for (phi.v1.Constraint, transport-free).
struct ConstraintSpec {
  enum class Kind { kNone, kJsonObject, kJsonSchema, kRegex, kGrammar, kChoice };
  Kind kind = Kind::kNone;
  std::string text;                  // kJsonSchema, kRegex, kGrammar
  std::vector<std::string> choices;  // kChoice
  bool any_whitespace = false;       // JSON kinds: allow whitespace between tokens
  bool active() const { return kind != Kind::kNone; }
};

struct ConstraintCompilerOptions {
  // The model's tokenizer.json (its vocabulary and added tokens, GPT-2 byte-level).
  std::string tokenizer_json_path;
  int32_t vocab_size = 0;               // the model's output rows (ids past the tokenizer: never allowed)
  std::vector<int32_t> eos_token_ids;   // what may end a complete match
  size_t max_cache_entries = 256;       // compiled grammars kept (LRU)
  double compile_timeout_seconds = 10;  // --grammar-compile-timeout-seconds
  int32_t compile_threads = 1;
  size_t max_text_bytes = 64 << 10;     // schema / regex / grammar text; sum of choices
  metrics::Registry* registry = nullptr;  // null: metrics::DefaultRegistry()
};

class CompiledConstraint;  // immutable, shared by every sequence using the same text

class ConstraintCompiler {
 public:
  // Reads the vocabulary from options.tokenizer_json_path. INVALID_ARGUMENT naming the file
  // when it cannot be read.
  static absl::StatusOr<std::unique_ptr<ConstraintCompiler>> Create(ConstraintCompilerOptions options);
  // Returns at once: a compile still running finishes on its detached thread.
  ~ConstraintCompiler();

  // Compiles `spec` (or finds it in the cache) and returns a fresh per-sequence matcher.
  // Thread-safe; blocks the caller at most compile_timeout_seconds. Errors name the field as
  // the proto spells it and where the problem is: INVALID_ARGUMENT
  // "sampling.constraint.json_schema: ... at offset 17", "sampling.constraint.regex: ...",
  // "... took more than 10 s to compile"; RESOURCE_EXHAUSTED when every compile thread is
  // busy with a grammar that is still running past its limit.
  absl::StatusOr<std::unique_ptr<TokenConstraint>> NewConstraint(const ConstraintSpec& spec);

 private:
  class Impl;
  explicit ConstraintCompiler(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;  // shared with the compile threads (see Impl::StartThreads)
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_GRAMMAR_CONSTRAINT_COMPILER_H_
