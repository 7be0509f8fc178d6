// libFuzzer: the gateway's gRPC requests after protobuf parsing. The first byte picks the message
// (ChatRequest or CompleteRequest) and whether the call streams; the rest is the wire bytes,
// parsed by the service's own ParseRequestBytes (UTF-8 checked per field first) and turned into
// GenerateParams by ParamsFromChat / ParamsFromComplete (services/gateway/request_params.h, which
// render ChatML), then checked by request_validation.h. Beyond "no crash, no leak, no UB": a refusal
// is INVALID_ARGUMENT naming a request field; an accepted request is inside every range the
// worker's engine checks that does not depend on the model (services/common/request_limits.h).
#include <google/protobuf/stubs/logging.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "services/common/request_limits.h"
#include "services/gateway/chatml.h"
#include "services/gateway/request_params.h"
#include "services/gateway/request_validation.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace phi::common;
using phi::gateway::GenerateParams;

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

bool NamesField(absl::string_view message) {
  for (absl::string_view field : {"request_id: ", "top_logprobs: ", "n: ", "best_of: ", "sampling.", "stopping.",
                                 "messages", "prompt: "}) {
    if (message.substr(0, field.size()) == field) return true;
  }
  return false;
}

void CheckAccepted(const GenerateParams& p) {
  FUZZ_CHECK(p.request_id.size() <= kMaxRequestIdBytes);
  FUZZ_CHECK(p.top_logprobs >= 0 && p.top_logprobs <= kMaxTopLogprobs);
  FUZZ_CHECK(p.n >= 0 && p.n <= kMaxChoices);
  FUZZ_CHECK(p.best_of == 0 || (p.best_of >= std::max(p.n, 1) && p.best_of <= kMaxChoices));
  FUZZ_CHECK(!p.stream || p.best_of <= std::max(p.n, 1));
  const auto& s = p.sampling;
  FUZZ_CHECK(InRange(s.temperature(), 0, kMaxTemperature));
  FUZZ_CHECK(InRange(s.top_p(), 0, kMaxTopP));
  FUZZ_CHECK(s.top_k() >= 0);
  FUZZ_CHECK(InRange(s.min_p(), 0, kMaxMinP));
  FUZZ_CHECK(InRange(s.repetition_penalty(), 0, kMaxRepetitionPenalty));
  FUZZ_CHECK(InRange(s.presence_penalty(), -kMaxAbsPenalty, kMaxAbsPenalty));
  FUZZ_CHECK(InRange(s.frequency_penalty(), -kMaxAbsPenalty, kMaxAbsPenalty));
  FUZZ_CHECK(static_cast<size_t>(s.logit_bias_size()) <= kMaxLogitBias);
  for (const auto& [id, bias] : s.logit_bias()) FUZZ_CHECK(id >= 0 && InRange(bias, -kMaxAbsLogitBias, kMaxAbsLogitBias));
  if (s.has_constraint()) {
    const phi::v1::Constraint& c = s.constraint();
    for (const std::string* t : {&c.json_schema(), &c.regex(), &c.grammar()}) FUZZ_CHECK(t->size() <= kMaxConstraintBytes);
    if (c.has_choice()) {
      FUZZ_CHECK(c.choice().choices_size() >= 1 && static_cast<size_t>(c.choice().choices_size()) <= kMaxConstraintChoices);
      for (const auto& choice : c.choice().choices()) FUZZ_CHECK(choice.size() <= kMaxConstraintBytes);
    }
  }
  const auto& st = p.stopping;
  FUZZ_CHECK(st.max_new_tokens() >= 0);
  FUZZ_CHECK(static_cast<size_t>(st.stop_size()) <= kMaxStopStrings);
  for (const auto& stop : st.stop()) FUZZ_CHECK(!stop.empty() && stop.size() <= kMaxStopStringBytes);
  FUZZ_CHECK(static_cast<size_t>(st.stop_token_ids_size()) <= kMaxStopTokenIds);
  for (int32_t id : st.stop_token_ids()) FUZZ_CHECK(id >= 0);
  FUZZ_CHECK(st.min_new_tokens() >= 0 && (st.max_new_tokens() == 0 || st.min_new_tokens() <= st.max_new_tokens()));
}

// ParseRequestBytes: bytes that are not the message, or a text field that is not UTF-8 (named).
void CheckParseRefusal(const absl::Status& s) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  FUZZ_CHECK(s.message().substr(0, 9) == "request: " ||
             s.message().find(": not valid UTF-8 at byte ") != absl::string_view::npos);
}

void CheckRefusal(const absl::Status& s) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  FUZZ_CHECK(NamesField(s.message()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // ParseFromArray logs each string field that is not UTF-8; the gateway refuses those first.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size < 1) return 0;
  const bool chat = (data[0] & 1) == 0;
  absl::StatusOr<GenerateParams> params;
  if (chat) {
    phi::v1::ChatRequest req;
    const absl::Status parsed = phi::gateway::ParseRequestBytes(data + 1, size - 1, &req);
    if (!parsed.ok()) return CheckParseRefusal(parsed), 0;
    phi::gateway::ChatmlOptions chatml;
    chatml.default_system_prompt = (data[0] & 4) != 0 ? "You are a helpful assistant." : "";
    params = phi::gateway::ParamsFromChat(req, chatml);
    if (params.ok()) FUZZ_CHECK(params->prompt.segments().segments_size() >= 6);
  } else {
    phi::v1::CompleteRequest req;
    const absl::Status parsed = phi::gateway::ParseRequestBytes(data + 1, size - 1, &req);
    if (!parsed.ok()) return CheckParseRefusal(parsed), 0;
    params = phi::gateway::ParamsFromComplete(req);
  }
  if (!params.ok()) return CheckRefusal(params.status()), 0;
  GenerateParams p = std::move(*params);
  p.stream = (data[0] & 2) != 0;
  const absl::Status sampling = phi::gateway::ValidateSampling(p.sampling);
  const absl::Status stopping = phi::gateway::ValidateStopping(p.stopping);
  const absl::Status common = phi::gateway::ValidateCommon(p);
  for (const absl::Status* s : {&sampling, &stopping, &common}) {
    if (!s->ok()) CheckRefusal(*s);
  }
  // ValidateCommon includes the other two.
  FUZZ_CHECK(!common.ok() || (sampling.ok() && stopping.ok()));
  if (common.ok()) CheckAccepted(p);
  return 0;
}
