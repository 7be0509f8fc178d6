// phi.v1 messages <-> the engine's request and output types. Proto defaults become engine
// values here (top_p 0, top_k 0 and repetition_penalty 0 -> the model's generation_config.json
// value, else off); range checks stay in the engine so there is one definition of a valid
// request.
#ifndef PHI_SERVICES_WORKER_SERVICE_PROTO_CONVERT_H_
#define PHI_SERVICES_WORKER_SERVICE_PROTO_CONVERT_H_

#include <string>

#include "absl/status/status.h"
#include "phi/v1/worker.pb.h"
#include "services/worker/engine/engine.h"
#include "services/worker/engine/request.h"
#include "services/worker/grammar/constraint_compiler.h"
#include "services/worker/model/generation_config.h"

namespace phi::worker {

// Everything but the constraint, which needs compiling (ConstraintFromProto, then
// ConstraintCompiler). logit_bias becomes a list sorted by token id; `adapter` is passed as is
// (CheckAdapterName first).
// `defaults`: what a request's unset (zero) top_p, top_k and repetition_penalty get, the
// model's generation_config.json values (model::DefaultsOf), or off. Its temperature and
// max_new_tokens are only reported (GetStatus): 0 in a request is greedy, and
// EngineOptions::default_max_new_tokens applies the latter.
GenerationRequest FromProto(const phi::v1::GenerateRequest& proto, const model::GenerationDefaults& defaults = {});

// A LoRA adapter's name (GenerateRequest.adapter, LoadAdapterRequest.name): at most 128 bytes
// of [A-Za-z0-9._-], and at least 1 unless `may_be_empty`. INVALID_ARGUMENT naming `field`.
inline constexpr size_t kMaxAdapterNameBytes = 128;
absl::Status CheckAdapterName(const std::string& name, const std::string& field, bool may_be_empty);

// GetStatusResponse.adapters, LoadAdapterResponse.adapter.
void ToProto(const AdapterInfo& info, phi::v1::AdapterInfo* out);

// sampling.constraint as the compiler takes it; kNone when unset (or json_object false).
ConstraintSpec ConstraintFromProto(const phi::v1::SamplingParams& sampling);

// GetStatusResponse.generation_defaults.
void ToProto(const model::GenerationDefaults& defaults, phi::v1::GetStatusResponse::GenerationDefaults* out);

phi::v1::FinishReason ToProto(FinishReason reason);

// Fills the ids, logprobs and (for the final chunk) finish reason, usage, timings and seed.
void ToProto(const OutputChunk& chunk, const std::string& request_id, phi::v1::GenerateResponse* out);

void ToProto(const EngineStatus& status, phi::v1::GetStatusResponse* out);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_PROTO_CONVERT_H_
