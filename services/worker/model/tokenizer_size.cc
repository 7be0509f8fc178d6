#include "services/worker/model/tokenizer_size.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/worker/model/phi_config.h"

namespace phi::worker::model {

absl::StatusOr<int32_t> LoadTokenizerVocabSize(const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer.json";
  auto text = ReadFileToString(path);
  if (absl::IsNotFound(text.status())) return 0;
  if (!text.ok()) return text.status();
  auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  int64_t max_id = -1;
  auto model = j.find("model");
  if (model != j.end() && model->is_object()) {
    auto vocab = model->find("vocab");
    if (vocab != model->end() && vocab->is_object()) {
      for (const auto& v : *vocab) {
        if (v.is_number_integer()) max_id = std::max<int64_t>(max_id, v.get<int64_t>());
      }
    }
  }
  auto added = j.find("added_tokens");
  if (added != j.end() && added->is_array()) {
    for (const auto& t : *added) {
      auto id = t.find("id");
      if (id != t.end() && id->is_number_integer()) max_id = std::max<int64_t>(max_id, id->get<int64_t>());
    }
  }
  if (max_id < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": no token ids in model.vocab or added_tokens"));
  return static_cast<int32_t>(max_id + 1);
}

}  // namespace phi::worker::model
