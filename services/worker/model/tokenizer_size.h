// How many token ids the model folder's tokenizer can produce: ids at or past it are
// embedding rows no text maps to (Phi-1.5: 50295 ids, 51200 rows) and are never sampled.
#ifndef PHI_SERVICES_WORKER_MODEL_TOKENIZER_SIZE_H_
#define PHI_SERVICES_WORKER_MODEL_TOKENIZER_SIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace phi::worker::model {

// 1 + the largest id in `<model_dir>/tokenizer.json` (model vocab and added tokens);
// 0 when the folder has no tokenizer.json.
absl::StatusOr<int32_t> LoadTokenizerVocabSize(const std::string& model_dir);

}  // namespace phi::worker::model

#endif  // PHI_SERVICES_WORKER_MODEL_TOKENIZER_SIZE_H_
