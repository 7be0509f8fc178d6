// libFuzzer: the worker's GenerateRequest after protobuf parsing -> what WorkerServiceImpl::Generate
// runs before the engine (services/worker/service/worker_service.cc): CheckAdapterName, FromProto
// and ConstraintFromProto. The first byte picks the model defaults FromProto fills in (none, or a
// generation_config.json's); the rest is the wire bytes. Beyond "no crash, no leak, no UB": the
// adapter name is accepted exactly when proto_convert.h's rule holds (refusals INVALID_ARGUMENT
// naming "adapter"); the engine request carries every field over, unset sampling fields take the
// defaults, logit_bias is sorted by id with one entry per id; the constraint keeps its kind and
// text. The engine's own range checks (Engine::Validate, private) need an engine and are not here.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "services/worker/service/proto_convert.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace phi::worker;

bool ReferenceAdapterNameOk(const std::string& name, bool may_be_empty) {
  if (name.empty()) return may_be_empty;
  if (name.size() > kMaxAdapterNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void CheckConstraint(const phi::v1::SamplingParams& s) {
  const ConstraintSpec spec = ConstraintFromProto(s);
  using Kind = ConstraintSpec::Kind;
  if (!s.has_constraint()) {
    FUZZ_CHECK(spec.kind == Kind::kNone);
    return;
  }
  const phi::v1::Constraint& c = s.constraint();
  FUZZ_CHECK(spec.any_whitespace == c.any_whitespace());
  switch (c.kind_case()) {
    case phi::v1::Constraint::kJsonObject:
      FUZZ_CHECK(spec.kind == (c.json_object() ? Kind::kJsonObject : Kind::kNone));
      break;
    case phi::v1::Constraint::kJsonSchema:
      FUZZ_CHECK(spec.kind == Kind::kJsonSchema && spec.text == c.json_schema());
      break;
    case phi::v1::Constraint::kRegex:
      FUZZ_CHECK(spec.kind == Kind::kRegex && spec.text == c.regex());
      break;
    case phi::v1::Constraint::kGrammar:
      FUZZ_CHECK(spec.kind == Kind::kGrammar && spec.text == c.grammar());
      break;
    case phi::v1::Constraint::kChoice:
      FUZZ_CHECK(spec.kind == Kind::kChoice);
      FUZZ_CHECK(spec.choices.size() == static_cast<size_t>(c.choice().choices_size()));
      for (size_t i = 0; i < spec.choices.size(); ++i) FUZZ_CHECK(spec.choices[i] == c.choice().choices(i));
      break;
    case phi::v1::Constraint::KIND_NOT_SET:
      FUZZ_CHECK(spec.kind == Kind::kNone);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // ParseFromArray logs each string field that is not UTF-8 (refused, as gRPC refuses it).
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size < 1) return 0;
  phi::worker::model::GenerationDefaults defaults;
  if (data[0] & 1) {
    defaults.top_p = 0.95f;
    defaults.top_k = 50;
    defaults.repetition_penalty = 1.1f;
  }
  phi::v1::GenerateRequest req;
  if (!req.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;

  for (bool may_be_empty : {true, false}) {
    const absl::Status st = CheckAdapterName(req.adapter(), "adapter", may_be_empty);
    FUZZ_CHECK(st.ok() == ReferenceAdapterNameOk(req.adapter(), may_be_empty));
    if (!st.ok()) {
      FUZZ_CHECK(st.code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(st.message().find("adapter: ") == 0);
    }
  }

  const GenerationRequest r = FromProto(req, defaults);
  const phi::v1::SamplingParams& s = req.sampling();
  FUZZ_CHECK(r.request_id == req.request_id());
  FUZZ_CHECK(r.prompt.size() == static_cast<size_t>(req.prompt_ids_size()));
  for (size_t i = 0; i < r.prompt.size(); ++i) FUZZ_CHECK(r.prompt[i] == req.prompt_ids(static_cast<int>(i)));
  auto same = [](float a, float b) { return a == b || (a != a && b != b); };  // NaN carried over as NaN
  FUZZ_CHECK(same(r.sampling.temperature, s.temperature()));
  FUZZ_CHECK(same(r.sampling.top_p, s.top_p() == 0.0f ? defaults.top_p : s.top_p()));
  FUZZ_CHECK(r.sampling.top_k == (s.top_k() == 0 ? defaults.top_k : s.top_k()));
  FUZZ_CHECK(same(r.sampling.min_p, s.min_p()));
  FUZZ_CHECK(same(r.sampling.repetition_penalty,
                  s.repetition_penalty() == 0.0f ? defaults.repetition_penalty : s.repetition_penalty()));
  FUZZ_CHECK(same(r.sampling.presence_penalty, s.presence_penalty()));
  FUZZ_CHECK(same(r.sampling.frequency_penalty, s.frequency_penalty()));
  FUZZ_CHECK(r.seed.has_value() == s.has_seed() && (!s.has_seed() || *r.seed == s.seed()));
  FUZZ_CHECK(r.logit_bias.size() == static_cast<size_t>(s.logit_bias_size()));
  for (size_t i = 0; i < r.logit_bias.size(); ++i) {
    FUZZ_CHECK(i == 0 || r.logit_bias[i - 1].token_id < r.logit_bias[i].token_id);
    FUZZ_CHECK(same(r.logit_bias[i].bias, s.logit_bias().at(r.logit_bias[i].token_id)));
  }
  const phi::v1::StoppingCriteria& stop = req.stopping();
  FUZZ_CHECK(r.stopping.max_new_tokens == stop.max_new_tokens());
  FUZZ_CHECK(r.stopping.min_new_tokens == stop.min_new_tokens());
  FUZZ_CHECK(r.stopping.ignore_eos == stop.ignore_eos());
  FUZZ_CHECK(r.stopping.stop_token_ids.size() == static_cast<size_t>(stop.stop_token_ids_size()));
  FUZZ_CHECK(r.logprobs == req.logprobs() && r.top_logprobs == req.top_logprobs());
  FUZZ_CHECK(r.prompt_logprobs == req.prompt_logprobs() && r.priority == req.priority());
  FUZZ_CHECK(r.adapter == req.adapter() && r.constraint == nullptr);
  CheckConstraint(s);
  return 0;
}
