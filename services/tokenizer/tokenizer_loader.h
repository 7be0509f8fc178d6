// Loading a tokenizer from Hugging Face files: tokenizer.json, or a model folder with
// vocab.json + merges.txt + added_tokens.json; special-token roles from tokenizer_config.json,
// special_tokens_map.json and generation_config.json. Anything this implementation does not
// reproduce exactly (another model type, a normalizer, a post-processor that adds tokens, ...)
// is refused with a message naming the file and the JSON location, never tokenized wrongly.
#ifndef PHI_SERVICES_TOKENIZER_TOKENIZER_LOADER_H_
#define PHI_SERVICES_TOKENIZER_TOKENIZER_LOADER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "services/tokenizer/tokenizer.h"

namespace phi::tokenizer {

// `source` names the text in error messages (a path).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerJson(std::string_view json_text,
                                                             std::string_view source);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerJsonFile(const std::string& path);

// A model folder: tokenizer.json when present, else vocab.json + merges.txt (+ added_tokens.json);
// then the special-token roles from the config files that exist there.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFolder(const std::string& dir);

// Reads the roles from whichever of the three config files exist in `dir`.
absl::StatusOr<SpecialRoles> LoadSpecialRoles(const std::string& dir, const Tokenizer& tokenizer);

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_TOKENIZER_LOADER_H_
