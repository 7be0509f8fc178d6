// A per-sequence constraint on which token may come next (constrained decoding): the engine
// asks it for the allowed-token bitmask before sampling and tells it each accepted token.
// The engine knows no grammar engine; services/worker/grammar implements this with xgrammar.
#ifndef PHI_SERVICES_WORKER_ENGINE_TOKEN_CONSTRAINT_H_
#define PHI_SERVICES_WORKER_ENGINE_TOKEN_CONSTRAINT_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace phi::worker {

// Words of a bitmask over `vocab_size` ids: bit (id % 32) of word (id / 32) set = allowed.
inline int32_t TokenMaskWords(int32_t vocab_size) { return (vocab_size + 31) / 32; }
inline bool TokenAllowed(std::span<const uint32_t> words, int32_t id) {
  return (words[static_cast<size_t>(id) / 32] >> (id % 32)) & 1u;
}

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Writes the ids allowed as the next token into `words` (TokenMaskWords(vocab) words; ids
  // past the tokenizer are never allowed). Once the grammar is complete only the eos ids
  // are. The engine may call this on a helper thread while the forward pass runs; calls for
  // one object never overlap each other or Accept.
  virtual void FillNextTokenMask(std::span<uint32_t> words) = 0;
  // Advances by the token the sampler chose. An error means the token was not allowed (a bug
  // upstream); the engine then ends the request with INTERNAL.
  virtual absl::Status Accept(int32_t token) = 0;
  // An eos id was accepted after a complete match: generation must end (finish reason stop).
  virtual bool IsTerminated() const = 0;
};

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_ENGINE_TOKEN_CONSTRAINT_H_
