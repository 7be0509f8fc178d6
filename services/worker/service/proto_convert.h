// phi.v1 messages <-> the engine's request and output types. Proto defaults become engine
// values here (top_p 0 -> 1, repetition_penalty 0 -> 1); range checks stay in the engine so
// there is one definition of a valid request.
#ifndef PHI_SERVICES_WORKER_SERVICE_PROTO_CONVERT_H_
#define PHI_SERVICES_WORKER_SERVICE_PROTO_CONVERT_H_

#include "phi/v1/worker.pb.h"
#include "services/worker/engine/engine.h"
#include "services/worker/engine/request.h"

namespace phi::worker {

GenerationRequest FromProto(const phi::v1::GenerateRequest& proto);

phi::v1::FinishReason ToProto(FinishReason reason);

// Fills the ids, logprobs and (for the final chunk) finish reason, usage, timings and seed.
void ToProto(const OutputChunk& chunk, const std::string& request_id, phi::v1::GenerateResponse* out);

void ToProto(const EngineStatus& status, phi::v1::GetStatusResponse* out);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_PROTO_CONVERT_H_
