#include "services/gateway/generator.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "services/gateway/generation.h"

namespace phi::gateway {

namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

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
  return absl::OkStatus();
}

absl::Status ValidateCommon(const GenerateParams& p) {
  if (p.request_id.size() > 128) {
    return Invalid(absl::StrCat("request_id: ", p.request_id.size(), " bytes, at most 128"));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > 20) {
    return Invalid(absl::StrCat("top_logprobs: ", p.top_logprobs, " is outside [0, 20]"));
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
