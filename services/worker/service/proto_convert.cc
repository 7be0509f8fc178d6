#include "services/worker/service/proto_convert.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace phi::worker {
namespace {

void ToProto(const PositionLogprob& lp, phi::v1::PositionLogprobs* out) {
  out->mutable_token()->set_token_id(lp.token.token_id);
  out->mutable_token()->set_logprob(lp.token.logprob);
  for (const TokenLogprobValue& t : lp.top) {
    phi::v1::TokenLogprob* alt = out->add_top();
    alt->set_token_id(t.token_id);
    alt->set_logprob(t.logprob);
  }
}

}  // namespace

GenerationRequest FromProto(const phi::v1::GenerateRequest& proto, const model::GenerationDefaults& defaults) {
  GenerationRequest r;
  r.request_id = proto.request_id();
  r.prompt.assign(proto.prompt_ids().begin(), proto.prompt_ids().end());
  const phi::v1::SamplingParams& s = proto.sampling();
  r.sampling.temperature = s.temperature();
  r.sampling.top_p = s.top_p() == 0.0f ? defaults.top_p : s.top_p();
  r.sampling.top_k = s.top_k() == 0 ? defaults.top_k : s.top_k();
  r.sampling.min_p = s.min_p();
  r.sampling.repetition_penalty = s.repetition_penalty() == 0.0f ? defaults.repetition_penalty
                                                                  : s.repetition_penalty();
  r.sampling.presence_penalty = s.presence_penalty();
  r.sampling.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) r.seed = s.seed();
  r.logit_bias.reserve(s.logit_bias_size());
  for (const auto& [id, bias] : s.logit_bias()) r.logit_bias.push_back({id, bias});
  std::sort(r.logit_bias.begin(), r.logit_bias.end(),
            [](const TokenBias& a, const TokenBias& b) { return a.token_id < b.token_id; });
  const phi::v1::StoppingCriteria& stop = proto.stopping();
  r.stopping.max_new_tokens = stop.max_new_tokens();
  r.stopping.stop_token_ids.assign(stop.stop_token_ids().begin(), stop.stop_token_ids().end());
  r.stopping.ignore_eos = stop.ignore_eos();
  r.stopping.min_new_tokens = stop.min_new_tokens();
  // stop strings are the gateway's: the worker never sees text.
  r.logprobs = proto.logprobs();
  r.top_logprobs = proto.top_logprobs();
  r.prompt_logprobs = proto.prompt_logprobs();
  r.priority = proto.priority();
  r.adapter = proto.adapter();
  return r;
}

absl::Status CheckAdapterName(const std::string& name, const std::string& field, bool may_be_empty) {
  if (name.empty() && !may_be_empty) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": required (1 to ", kMaxAdapterNameBytes, " bytes of A-Z a-z 0-9 . _ -)"));
  }
  if (name.size() > kMaxAdapterNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", name.size(), " bytes, at most ", kMaxAdapterNameBytes));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": byte ", i, " (0x", absl::Hex(static_cast<uint8_t>(c)),
                                                     ") is not one of A-Z a-z 0-9 . _ -"));
    }
  }
  return absl::OkStatus();
}

void ToProto(const AdapterInfo& info, phi::v1::AdapterInfo* out) {
  out->set_name(info.name);
  out->set_path(info.path);
  out->set_base_model(info.base_model);
  out->set_rank(info.rank);
  for (const std::string& m : info.target_modules) out->add_target_modules(m);
  out->set_resident(info.resident);
  out->set_requests(info.requests);
}

ConstraintSpec ConstraintFromProto(const phi::v1::SamplingParams& sampling) {
  ConstraintSpec spec;
  if (!sampling.has_constraint()) return spec;
  const phi::v1::Constraint& c = sampling.constraint();
  spec.any_whitespace = c.any_whitespace();
  switch (c.kind_case()) {
    case phi::v1::Constraint::kJsonObject:
      if (c.json_object()) spec.kind = ConstraintSpec::Kind::kJsonObject;
      break;
    case phi::v1::Constraint::kJsonSchema:
      spec.kind = ConstraintSpec::Kind::kJsonSchema;
      spec.text = c.json_schema();
      break;
    case phi::v1::Constraint::kRegex:
      spec.kind = ConstraintSpec::Kind::kRegex;
      spec.text = c.regex();
      break;
    case phi::v1::Constraint::kGrammar:
      spec.kind = ConstraintSpec::Kind::kGrammar;
      spec.text = c.grammar();
      break;
    case phi::v1::Constraint::kChoice:
      spec.kind = ConstraintSpec::Kind::kChoice;
      spec.choices.assign(c.choice().choices().begin(), c.choice().choices().end());
      break;
    case phi::v1::Constraint::KIND_NOT_SET:
      break;
  }
  return spec;
}

phi::v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return phi::v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kStop: return phi::v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return phi::v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled: return phi::v1::FINISH_REASON_CANCELLED;
    case FinishReason::kContextLength: return phi::v1::FINISH_REASON_CONTEXT_LENGTH;
    case FinishReason::kError: return phi::v1::FINISH_REASON_ERROR;
  }
  return phi::v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const OutputChunk& chunk, const std::string& request_id, phi::v1::GenerateResponse* out) {
  out->set_request_id(request_id);
  for (int32_t id : chunk.token_ids) out->add_token_ids(id);
  for (const PositionLogprob& lp : chunk.logprobs) ToProto(lp, out->add_logprobs());
  for (const PositionLogprob& lp : chunk.prompt_logprobs) ToProto(lp, out->add_prompt_logprobs());
  if (!chunk.finished) return;
  out->set_finish_reason(ToProto(chunk.finish_reason));
  phi::v1::Usage* usage = out->mutable_usage();
  usage->set_prompt_tokens(chunk.prompt_tokens);
  usage->set_completion_tokens(chunk.completion_tokens);
  usage->set_cached_prompt_tokens(chunk.cached_prompt_tokens);
  phi::v1::Timings* t = out->mutable_timings();
  t->set_queue_seconds(chunk.timings.queue_seconds);
  t->set_prefill_seconds(chunk.timings.prefill_seconds);
  t->set_decode_seconds(chunk.timings.decode_seconds);
  t->set_time_to_first_token_seconds(chunk.timings.time_to_first_token_seconds);
  t->set_total_seconds(chunk.timings.total_seconds);
  out->set_seed(chunk.seed);
}

void ToProto(const model::GenerationDefaults& defaults, phi::v1::GetStatusResponse::GenerationDefaults* out) {
  phi::v1::SamplingParams* s = out->mutable_sampling();
  s->set_temperature(defaults.temperature);
  s->set_top_p(defaults.top_p);
  s->set_top_k(defaults.top_k);
  s->set_repetition_penalty(defaults.repetition_penalty);
  out->set_max_new_tokens(defaults.max_new_tokens);
}

void ToProto(const EngineStatus& status, phi::v1::GetStatusResponse* out) {
  out->set_waiting(status.waiting);
  out->set_running(status.running);
  out->set_kv_blocks_free(status.kv_blocks_free);
  out->set_kv_blocks_total(status.kv_blocks_total);
  out->set_kv_block_size(status.kv_block_size);
  out->set_prefix_cache_hit_rate(status.prefix_cache_hit_rate);
  for (uint64_t h : status.cached_block_hashes) out->add_cached_block_hashes(h);
}

}  // namespace phi::worker
