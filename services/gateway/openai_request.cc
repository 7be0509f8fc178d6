#include "services/gateway/openai_request.h"

#include <string>
#include <string_view>

#include "services/gateway/openai_json.h"

namespace phi::gateway {

absl::Status ClientFieldError(const absl::Status& status, std::string_view constraint_param) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  std::string_view m(status.message().data(), status.message().size());
  struct Rename {
    std::string_view field, param;
  };
  const Rename renames[] = {{"sampling.constraint.", constraint_param},
                            {"sampling.constraint", constraint_param},
                            {"sampling.logit_bias", "logit_bias"},
                            {"stopping.min_new_tokens", "min_tokens"},
                            {"stopping.include_stop_str_in_output", "include_stop_str_in_output"}};
  for (const Rename& r : renames) {
    // The field starts the message or follows a context such as "worker group h:p: ".
    size_t at = m.find(r.field);
    if (at == std::string_view::npos || r.param.empty() || (at > 0 && m[at - 1] != ' ')) continue;
    std::string_view rest = m.substr(at + r.field.size());
    std::string name(r.param);
    if (r.field.back() == '.') {  // the constraint's kind: "json_schema: ...", "choice.choices[3]: ..."
      const size_t colon = rest.find(':');
      if (colon == std::string_view::npos) continue;
      constexpr std::string_view kChoices = "choice.choices";
      if (rest.substr(0, kChoices.size()) == kChoices) name += rest.substr(kChoices.size(), colon - kChoices.size());
      rest = rest.substr(colon);
    }
    if (r.param == "logit_bias" && !rest.empty() && rest[0] == '[') {  // [50256] -> .50256
      const size_t close = rest.find(']');
      if (close != std::string_view::npos) {
        name = Cat(name, ".", rest.substr(1, close - 1));
        rest = rest.substr(close + 1);
      }
    }
    if (rest.empty() || rest[0] != ':') continue;
    return Invalid(Cat(name, rest));
  }
  return status;
}

}  // namespace phi::gateway
