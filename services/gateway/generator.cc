#include "services/gateway/generator.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/gateway/generation.h"

namespace phi::gateway {

namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

constexpr size_t kMaxConstraintBytes = 64 << 10;
constexpr int kMaxLogitBias = 1024;
constexpr int kMaxChoices = 16;

// Where a JSON text stops parsing (nlohmann's SAX interface: no exception, no document built).
struct JsonErrorFinder : nlohmann::json::json_sax_t {
  bool null() override { return Value('v'); }
  bool boolean(bool) override { return Value('b'); }
  bool number_integer(number_integer_t) override { return Value('v'); }
  bool number_unsigned(number_unsigned_t) override { return Value('v'); }
  bool number_float(number_float_t, const string_t&) override { return Value('v'); }
  bool string(string_t&) override { return Value('v'); }
  bool binary(binary_t&) override { return Value('v'); }
  bool start_object(std::size_t) override { return Value('{'), ++depth, true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return --depth, true; }
  bool start_array(std::size_t) override { return Value('['), ++depth, true; }
  bool end_array() override { return --depth, true; }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::json::exception& e) override {
    failed = true;
    offset = position;
    what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 9: syntax error ...": the
    // part after the position, which the caller reports as a byte offset.
    if (size_t at = what.find(": "); at != std::string::npos) what = what.substr(at + 2);
    return false;
  }
  bool Value(char kind) {
    if (depth == 0) top = kind;
    return true;
  }
  int depth = 0;
  char top = 0;  // the document's kind: '{' object, '[' array, 'b' boolean, 'v' another value
  bool failed = false;
  size_t offset = 0;
  std::string what;
};

absl::Status ValidateJsonSchema(const std::string& text) {
  const char* field = "sampling.constraint.json_schema";
  JsonErrorFinder finder;
  nlohmann::json::sax_parse(text, &finder);
  if (finder.failed) {
    // nlohmann counts the bytes read, the bad one included.
    const size_t offset = finder.offset > 0 ? finder.offset - 1 : 0;
    return Invalid(absl::StrCat(field, ": not JSON at offset ", offset, ": ", finder.what));
  }
  if (finder.top != '{' && finder.top != 'b') {
    return Invalid(absl::StrCat(field, ": a schema is a JSON object (or true or false)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateConstraint(const phi::v1::Constraint& c) {
  auto text_ok = [](const char* field, const std::string& t) -> absl::Status {
    if (t.empty()) return Invalid(absl::StrCat("sampling.constraint.", field, ": empty"));
    if (t.size() > kMaxConstraintBytes) {
      return Invalid(absl::StrCat("sampling.constraint.", field, ": ", t.size(), " bytes, at most 65536"));
    }
    return absl::OkStatus();
  };
  switch (c.kind_case()) {
    case phi::v1::Constraint::kJsonSchema:
      if (absl::Status s = text_ok("json_schema", c.json_schema()); !s.ok()) return s;
      return ValidateJsonSchema(c.json_schema());
    case phi::v1::Constraint::kRegex:
      return text_ok("regex", c.regex());
    case phi::v1::Constraint::kGrammar:
      return text_ok("grammar", c.grammar());
    case phi::v1::Constraint::kChoice: {
      const auto& choices = c.choice().choices();
      if (choices.empty() || choices.size() > 256) {
        return Invalid(absl::StrCat("sampling.constraint.choice.choices: ", choices.size(), " strings, 1 to 256"));
      }
      for (int i = 0; i < choices.size(); ++i) {
        if (choices[i].size() > kMaxConstraintBytes) {
          return Invalid(absl::StrCat("sampling.constraint.choice.choices[", i, "]: ", choices[i].size(),
                                      " bytes, at most 65536"));
        }
      }
      return absl::OkStatus();
    }
    case phi::v1::Constraint::kJsonObject:
    case phi::v1::Constraint::KIND_NOT_SET:
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSampling(const phi::v1::SamplingParams& s) {
  if (!InRange(s.temperature(), 0, 100)) {
    return Invalid(absl::StrCat("sampling.temperature: ", s.temperature(), " is outside [0, 100]"));
  }
  if (!InRange(s.top_p(), 0, 1)) return Invalid(absl::StrCat("sampling.top_p: ", s.top_p(), " is outside (0, 1]"));
  if (s.top_k() < 0) return Invalid(absl::StrCat("sampling.top_k: ", s.top_k(), " is negative (0 means off)"));
  if (!InRange(s.min_p(), 0, 1)) return Invalid(absl::StrCat("sampling.min_p: ", s.min_p(), " is outside [0, 1]"));
  if (!InRange(s.repetition_penalty(), 0, 10)) {
    return Invalid(absl::StrCat("sampling.repetition_penalty: ", s.repetition_penalty(), " is outside [0, 10]"));
  }
  if (!InRange(s.presence_penalty(), -2, 2)) {
    return Invalid(absl::StrCat("sampling.presence_penalty: ", s.presence_penalty(), " is outside [-2, 2]"));
  }
  if (!InRange(s.frequency_penalty(), -2, 2)) {
    return Invalid(absl::StrCat("sampling.frequency_penalty: ", s.frequency_penalty(), " is outside [-2, 2]"));
  }
  if (s.logit_bias_size() > kMaxLogitBias) {
    return Invalid(absl::StrCat("sampling.logit_bias: ", s.logit_bias_size(), " entries, at most ", kMaxLogitBias));
  }
  // Sorted, so that the first bad entry reported does not depend on the map's order. The
  // upper bound of the ids is the model's vocabulary (checked where it is known).
  const std::map<int32_t, float> bias(s.logit_bias().begin(), s.logit_bias().end());
  for (const auto& [id, value] : bias) {
    if (id < 0) return Invalid(absl::StrCat("sampling.logit_bias[", id, "]: negative token id (range [0, vocab))"));
    if (!InRange(value, -100, 100)) {
      return Invalid(absl::StrCat("sampling.logit_bias[", id, "]: ", value, " is outside [-100, 100]"));
    }
  }
  if (s.has_constraint()) return ValidateConstraint(s.constraint());
  return absl::OkStatus();
}

absl::Status ValidateStopping(const phi::v1::StoppingCriteria& s) {
  if (s.max_new_tokens() < 0) {
    return Invalid(absl::StrCat("stopping.max_new_tokens: ", s.max_new_tokens(), " is negative (0 means 256)"));
  }
  if (s.stop_size() > 16) return Invalid(absl::StrCat("stopping.stop: ", s.stop_size(), " strings, at most 16"));
  for (int i = 0; i < s.stop_size(); ++i) {
    if (s.stop(i).empty()) return Invalid(absl::StrCat("stopping.stop[", i, "]: empty"));
    if (s.stop(i).size() > 256) {
      return Invalid(absl::StrCat("stopping.stop[", i, "]: ", s.stop(i).size(), " bytes, at most 256"));
    }
  }
  if (s.stop_token_ids_size() > 64) {
    return Invalid(absl::StrCat("stopping.stop_token_ids: ", s.stop_token_ids_size(), " ids, at most 64"));
  }
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    if (s.stop_token_ids(i) < 0) return Invalid(absl::StrCat("stopping.stop_token_ids[", i, "]: negative id"));
  }
  // max_new_tokens 0 takes the default later (Generation checks the bound against it then).
  if (s.min_new_tokens() < 0 || (s.max_new_tokens() > 0 && s.min_new_tokens() > s.max_new_tokens())) {
    return Invalid(absl::StrCat("stopping.min_new_tokens: ", s.min_new_tokens(), " is outside [0, max_new_tokens",
                                s.max_new_tokens() > 0 ? absl::StrCat(" = ", s.max_new_tokens()) : "", "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCommon(const GenerateParams& p) {
  if (p.request_id.size() > 128) {
    return Invalid(absl::StrCat("request_id: ", p.request_id.size(), " bytes, at most 128"));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > 20) {
    return Invalid(absl::StrCat("top_logprobs: ", p.top_logprobs, " is outside [0, 20]"));
  }
  if (p.n < 0 || p.n > kMaxChoices) return Invalid(absl::StrCat("n: ", p.n, " is outside [1, ", kMaxChoices, "]"));
  const int32_t n = std::max(p.n, 1);
  if (p.best_of != 0 && (p.best_of < n || p.best_of > kMaxChoices)) {
    return Invalid(absl::StrCat("best_of: ", p.best_of, " is outside [n, ", kMaxChoices, "] = [", n, ", ",
                                kMaxChoices, "]"));
  }
  if (p.stream && p.best_of > n) {
    return Invalid(absl::StrCat("best_of: ", p.best_of, " > n = ", n,
                                " needs the whole choices before any is returned: not with streaming"));
  }
  if (absl::Status s = ValidateSampling(p.sampling); !s.ok()) return s;
  return ValidateStopping(p.stopping);
}

Generator::Generator(TokenizerClient* tokenizer, WorkerPool* pool, GatewayMetrics* metrics, GeneratorOptions options)
    : tokenizer_(tokenizer), pool_(pool), metrics_(metrics), options_(options) {
  if (!tokenizer_->local_encode()) blocking_ = std::make_unique<BlockingExecutor>(options_.tokenizer_call_threads);
}

Generator::~Generator() = default;

void Generator::Offload(std::function<void()> task, bool ahead) {
  if (blocking_) {
    blocking_->Post(std::move(task), ahead);
  } else {
    task();  // nothing here blocks (in-process tokenizer)
  }
}

std::shared_ptr<Generation> Generator::Start(GenerateParams params, GenerationSink* sink) {
  if (params.request_id.empty()) params.request_id = NewRequestId();
  const bool encode_remotely = params.prompt_ids.empty() && !tokenizer_->local_encode();
  auto generation = std::make_shared<Generation>(this, std::move(params), sink);
  if (encode_remotely) {
    // The Encode RPC blocks: not on the caller's thread, which may be one of gRPC's.
    Offload([generation] { generation->Prepare(); }, /*ahead=*/true);
  } else {
    generation->Prepare();
  }
  return generation;
}

}  // namespace phi::gateway
