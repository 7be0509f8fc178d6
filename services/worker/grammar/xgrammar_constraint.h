// TokenConstraint on an xgrammar GrammarMatcher: one per sequence, over a CompiledGrammar that
// every sequence with the same constraint shares.
#ifndef PHI_SERVICES_WORKER_GRAMMAR_XGRAMMAR_CONSTRAINT_H_
#define PHI_SERVICES_WORKER_GRAMMAR_XGRAMMAR_CONSTRAINT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/engine/token_constraint.h"
#include "xgrammar/xgrammar.h"

namespace phi::worker {

class XgrammarConstraint final : public TokenConstraint {
 public:
  // `vocab_size`: the model's output rows, the size of the compiled grammar's TokenizerInfo.
  // `eos_ids`: allowed once the matcher has terminated (the engine should have stopped).
  static absl::StatusOr<std::unique_ptr<XgrammarConstraint>> Create(const xgrammar::CompiledGrammar& grammar,
                                                                    int32_t vocab_size,
                                                                    std::vector<int32_t> eos_ids);

  void FillNextTokenMask(std::span<uint32_t> words) override;
  absl::Status Accept(int32_t token) override;
  bool IsTerminated() const override;

  // A copy in the same state (for tests: the reference mask tries each token on a fork).
  std::unique_ptr<XgrammarConstraint> Fork() const;

 private:
  XgrammarConstraint(xgrammar::GrammarMatcher matcher, int32_t vocab_size, std::vector<int32_t> eos_ids)
      : matcher_(std::move(matcher)), vocab_size_(vocab_size), eos_ids_(std::move(eos_ids)) {}
  void FillEosOnly(std::span<uint32_t> words) const;

  xgrammar::GrammarMatcher matcher_;
  int32_t vocab_size_;
  std::vector<int32_t> eos_ids_;
  std::string error_;  // an xgrammar failure inside FillNextTokenMask, reported by Accept
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_GRAMMAR_XGRAMMAR_CONSTRAINT_H_
