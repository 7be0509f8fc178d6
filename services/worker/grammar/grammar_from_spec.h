// From a ConstraintSpec to an xgrammar CompiledGrammar: the checks that need no compiling
// (sizes, counts, JSON syntax), the cache key, and the compile itself with xgrammar's errors
// turned into INVALID_ARGUMENT naming the proto field.
#ifndef PHI_SERVICES_WORKER_GRAMMAR_GRAMMAR_FROM_SPEC_H_
#define PHI_SERVICES_WORKER_GRAMMAR_GRAMMAR_FROM_SPEC_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/worker/grammar/constraint_compiler.h"
#include "xgrammar/xgrammar.h"

namespace phi::worker {

inline constexpr size_t kMaxChoices = 256;

// With any_whitespace, each gap between JSON tokens holds at most this many whitespace
// characters (space, \n, \r, \t). Unbounded, a model that favours whitespace never leaves it;
// 20 is llama.cpp's bound on a gap's indentation (vLLM and SGLang leave it unbounded).
inline constexpr int kMaxJsonWhitespace = 20;

// The field as the client spelled it, e.g. "sampling.constraint.json_schema".
std::string ConstraintFieldName(ConstraintSpec::Kind kind);

// Cheap checks before compiling: text (or sum of choices) at most `max_text_bytes`, 1 to
// kMaxChoices choices, a JSON schema that is JSON (else the byte offset of the error).
absl::Status ValidateConstraintSpec(const ConstraintSpec& spec, size_t max_text_bytes);

// Distinct for every spec that compiles differently (kind, whitespace flag, text / choices).
std::string ConstraintCacheKey(const ConstraintSpec& spec);

// xgrammar EBNF that matches exactly one of `choices` (literals escaped).
std::string ChoiceGrammar(const std::vector<std::string>& choices);

// Compiles `spec` against the compiler's vocabulary. Never throws: xgrammar's exceptions
// become INVALID_ARGUMENT "<field>: <xgrammar's message>" (which gives the line and column
// of an EBNF error and the position of a regex error).
absl::StatusOr<xgrammar::CompiledGrammar> CompileConstraintSpec(xgrammar::GrammarCompiler& compiler,
                                                                const ConstraintSpec& spec);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_GRAMMAR_GRAMMAR_FROM_SPEC_H_
