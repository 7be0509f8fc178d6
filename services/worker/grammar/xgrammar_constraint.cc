#include "services/worker/grammar/xgrammar_constraint.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"

namespace phi::worker {

absl::StatusOr<std::unique_ptr<XgrammarConstraint>> XgrammarConstraint::Create(
    const xgrammar::CompiledGrammar& grammar, int32_t vocab_size, std::vector<int32_t> eos_ids) {
  try {
    xgrammar::GrammarMatcher matcher(grammar);
    return std::unique_ptr<XgrammarConstraint>(
        new XgrammarConstraint(std::move(matcher), vocab_size, std::move(eos_ids)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("grammar matcher: ", e.what()));
  }
}

void XgrammarConstraint::FillEosOnly(std::span<uint32_t> words) const {
  std::fill(words.begin(), words.end(), 0u);
  for (int32_t id : eos_ids_) {
    if (id >= 0 && static_cast<size_t>(id) / 32 < words.size()) words[id / 32] |= 1u << (id % 32);
  }
}

void XgrammarConstraint::FillNextTokenMask(std::span<uint32_t> words) {
  if (!error_.empty() || matcher_.IsTerminated()) {
    FillEosOnly(words);
    return;
  }
  // xgrammar's bitmask: int32 words, bit (id % 32) of word (id / 32), exactly as ours.
  const auto n = static_cast<size_t>(TokenMaskWords(vocab_size_));
  std::vector<uint32_t> scratch;
  std::span<uint32_t> target = words;
  if (words.size() != n) {  // a caller's mask of another width: fill a scratch copy
    scratch.assign(n, 0u);
    target = scratch;
  }
  int64_t shape[1] = {static_cast<int64_t>(n)};
  DLTensor tensor{};
  tensor.data = target.data();
  tensor.device = DLDevice{kDLCPU, 0};
  tensor.ndim = 1;
  tensor.dtype = DLDataType{kDLInt, 32, 1};
  tensor.shape = shape;
  try {
    matcher_.FillNextTokenBitmask(&tensor);
  } catch (const std::exception& e) {
    error_ = e.what();
    FillEosOnly(words);
    return;
  }
  if (vocab_size_ % 32 != 0) target[n - 1] &= (1u << (vocab_size_ % 32)) - 1;  // no ids past the rows
  if (!scratch.empty()) {
    std::fill(words.begin(), words.end(), 0u);
    std::copy_n(scratch.begin(), std::min(words.size(), n), words.begin());
  }
}

absl::Status XgrammarConstraint::Accept(int32_t token) {
  if (!error_.empty()) return absl::InternalError(absl::StrCat("grammar matcher: ", error_));
  if (token < 0 || token >= vocab_size_) {
    return absl::InternalError(absl::StrCat("token ", token, " is outside the vocabulary [0, ", vocab_size_, ")"));
  }
  if (matcher_.IsTerminated()) {
    return absl::InternalError(absl::StrCat("token ", token, " after the grammar has terminated"));
  }
  try {
    if (!matcher_.AcceptToken(token)) {
      return absl::InternalError(absl::StrCat("token ", token, " is not allowed by the grammar"));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("grammar matcher: ", e.what()));
  }
  return absl::OkStatus();
}

bool XgrammarConstraint::IsTerminated() const { return matcher_.IsTerminated(); }

std::unique_ptr<XgrammarConstraint> XgrammarConstraint::Fork() const {
  auto copy = std::unique_ptr<XgrammarConstraint>(new XgrammarConstraint(matcher_.Fork(), vocab_size_, eos_ids_));
  copy->error_ = error_;
  return copy;
}

}  // namespace phi::worker
