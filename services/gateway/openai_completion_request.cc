// POST /v1/completions bodies (ParseCompletionRequest in openai_request.h): prompts as text or
// token ids, several at once, echo and logprobs (lm-evaluation-harness's local-completions).
#include "services/gateway/openai_request.h"

#include <simdjson.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "services/gateway/openai_generation_fields.h"
#include "services/gateway/openai_json.h"
#include "services/gateway/openai_request_bounds.h"

namespace phi::gateway {
namespace {

// The completions endpoint's own parameters, on top of the shared ones (IsGenerationField).
// clang-format off
constexpr std::string_view kCompletionKeys[] = {"prompt", "echo", "logprobs", "suffix"};
// clang-format on

struct RawPrompt {
  std::string text;  // when ids is empty
  std::vector<int32_t> ids;
};

// Completions' prompt: a string, strings, token ids (one prompt), or arrays of token ids;
// never mixed, never empty.
absl::Status ReadPrompts(od::value& v, const OpenAiRequestLimits& limits, std::vector<RawPrompt>* out) {
  constexpr std::string_view kWant =
      "a string, an array of strings, an array of token ids or an array of arrays of token ids";
  od::json_type t = od::json_type::null;
  if (absl::Status s = TypeOf(v, &t); !s.ok()) return s;
  if (t == od::json_type::string) {
    std::string_view text;
    if (absl::Status s = ReadString(v, "prompt", &text); !s.ok()) return s;
    if (text.empty()) return Invalid("prompt: must not be empty");
    out->push_back({std::string(text), {}});
    return absl::OkStatus();
  }
  if (t != od::json_type::array) return WrongType("prompt", kWant, t);
  od::array a;
  if (error_code e = v.get_array().get(a)) return JsonError(e);
  od::json_type first = od::json_type::null;
  absl::Status st = ForEachElement(a, [&](size_t i, od::value& e) -> absl::Status {
    const std::string at = Cat("prompt[", i, "]");
    od::json_type et = od::json_type::null;
    if (absl::Status s = TypeOf(e, &et); !s.ok()) return s;
    if (i == 0) {
      if (et != od::json_type::string && et != od::json_type::number && et != od::json_type::array) {
        return WrongType(at, "a string, a token id or an array of token ids", et);
      }
      first = et;
      if (et == od::json_type::number) out->emplace_back();
    }
    if (first == od::json_type::number) {  // one prompt of ids
      if (i >= limits.max_prompt_token_ids) {
        return Invalid(Cat("prompt: at most ", limits.max_prompt_token_ids, " token ids"));
      }
      int64_t id = 0;
      if (et != od::json_type::number) return WrongType(at, "a token id like prompt[0]", et);
      if (absl::Status s = ReadInt(e, at, 0, kMaxTokenId, &id); !s.ok()) return s;
      out->back().ids.push_back(static_cast<int32_t>(id));
      return absl::OkStatus();
    }
    if (i >= limits.max_prompts) return Invalid(Cat("prompt: at most ", limits.max_prompts, " prompts"));
    if (first == od::json_type::string) {
      if (et != od::json_type::string) return WrongType(at, "a string like prompt[0]", et);
      std::string_view text;
      if (absl::Status s = ReadString(e, at, &text); !s.ok()) return s;
      if (text.empty()) return Invalid(Cat(at, ": must not be empty"));
      out->push_back({std::string(text), {}});
      return absl::OkStatus();
    }
    if (et != od::json_type::array) return WrongType(at, "an array of token ids like prompt[0]", et);
    od::array ids;
    if (error_code err = e.get_array().get(ids)) return JsonError(err);
    out->emplace_back();
    if (absl::Status s = ReadTokenIds(ids, at, limits.max_prompt_token_ids, &out->back().ids); !s.ok()) return s;
    if (out->back().ids.empty()) return Invalid(Cat(at, ": must not be empty"));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  if (out->empty()) return Invalid("prompt: must not be empty");
  return absl::OkStatus();
}

// The completions endpoint's own fields (prompt, echo, logprobs, suffix).
struct CompletionOnlyFields {
  std::vector<RawPrompt> prompts;
  bool has_prompt = false;
  bool echo = false;
  std::optional<int64_t> logprobs;

  // false: not one of them.
  absl::StatusOr<bool> Handle(std::string_view key, od::value& v, const OpenAiRequestLimits& limits) {
    absl::Status st;
    if (key == "prompt") {
      has_prompt = true;
      st = ReadPrompts(v, limits, &prompts);
    } else if (key == "echo") {
      st = ReadBool(v, key, &echo);
    } else if (key == "logprobs") {
      int64_t lp = 0;
      if ((st = ReadInt(v, key, 0, kMaxLogprobs, &lp)).ok()) logprobs = lp;
    } else if (key == "suffix") {
      std::string_view text;
      if ((st = ReadString(v, key, &text)).ok() && !text.empty()) {
        st = Invalid("suffix: not supported (only \"\" or null)");
      }
    } else {
      return false;
    }
    if (!st.ok()) return st;
    return true;
  }
};

// One GenerateParams per prompt, each a copy of `base` with its prompt (text or ids).
std::vector<GenerateParams> ExpandPrompts(std::vector<RawPrompt>& prompts, const GenerateParams& base, bool echo) {
  std::vector<GenerateParams> out;
  out.reserve(prompts.size());
  for (RawPrompt& raw : prompts) {
    GenerateParams& p = out.emplace_back(base);
    if (raw.ids.empty()) {
      if (echo) p.echo_text = raw.text;
      p.prompt.set_text(std::move(raw.text));
      p.parse_special = true;
    } else {
      p.prompt_ids = std::move(raw.ids);
    }
    // echo + logprobs: prompt logprobs are part of the answer (lm-eval scoring).
    p.prompt_logprobs = echo && p.logprobs;
  }
  return out;
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body, const OpenAiRequestLimits& limits) {
  GenerationFields common(/*chat=*/false, limits);
  CompletionOnlyFields own;
  absl::Status st = ForEachTopLevelField(body, limits, [&](std::string_view key, od::value& v) -> absl::Status {
    if (!IsGenerationField(key) && !IsOneOf(key, kCompletionKeys)) return Unknown("", key);
    bool is_null = false;
    if (absl::Status s = ConsumeIfNull(v, &is_null); !s.ok() || is_null) return s;  // null = absent
    absl::StatusOr<bool> handled = own.Handle(key, v, limits);
    if (handled.ok() && !*handled) handled = common.Handle(key, v);
    if (!handled.ok()) return handled.status();
    return *handled ? absl::OkStatus() : Unknown("", key);
  });
  if (!st.ok()) return st;
  if (!own.has_prompt) return Invalid("prompt: required (a string, strings or token ids)");
  const bool score_only = common.max_tokens() == 0;
  if (score_only && !own.echo) return Invalid("max_tokens: 0 is allowed only with echo (scoring the prompt)");
  // OpenAI's default max_tokens for completions is 16.
  if (absl::Status s = common.Finish(/*default_max_tokens=*/16); !s.ok()) return s;
  GenerateParams& base = common.params();
  if (score_only && (base.n > 1 || base.best_of > 1)) {
    return Invalid(Cat(base.n > 1 ? "n" : "best_of", ": must be 1 with max_tokens 0 (scoring the prompt)"));
  }
  if (score_only) base.stopping.set_max_new_tokens(1);
  if (own.logprobs) {
    base.logprobs = true;
    base.top_logprobs = static_cast<int32_t>(*own.logprobs);
  }
  CompletionRequest out;
  out.model = base.model;
  out.stream = common.stream();
  out.include_usage = common.include_usage();
  out.echo = own.echo;
  out.score_only = score_only;
  out.constraint_param = common.constraint_param();
  out.prompts = ExpandPrompts(own.prompts, base, own.echo);
  return out;
}

}  // namespace phi::gateway
