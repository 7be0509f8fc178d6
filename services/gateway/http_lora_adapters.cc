// vLLM's dynamic LoRA endpoints on the HTTP API (HttpApi::LoadLoraAdapter / UnloadLoraAdapter):
//   POST /v1/load_lora_adapter   {"lora_name": "...", "lora_path": "/adapters/x"}
//   POST /v1/unload_lora_adapter {"lora_name": "..."}
// As vLLM answers: 200 with a plain-text success line; errors 400 with the error JSON (401
// without a valid key when keys are configured; 503 when no worker group is ready). The
// workers are called on LoraAdmin's thread, which answers the exchange.
#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/gateway/http_api.h"
#include "services/gateway/lora_request.h"

namespace phi::gateway {

namespace {

constexpr char kLoadRoute[] = "http_load_lora_adapter";
constexpr char kUnloadRoute[] = "http_unload_lora_adapter";

std::string CodeName(const absl::Status& s) {
  return std::string(common::GrpcCodeName(common::ToGrpcStatus(s).error_code()));
}

// vLLM answers every refused load or unload with 400; a missing key stays 401 and "no worker
// group is ready" 503 (both say what to do differently from a bad request).
void RespondAdminError(const std::shared_ptr<HttpExchange>& ex, const absl::Status& s, const std::string& request_id) {
  if (s.code() == absl::StatusCode::kUnauthenticated || s.code() == absl::StatusCode::kUnavailable) {
    return RespondError(ex, s, request_id);
  }
  ex->Respond(400, kJsonContentType, DumpJson(OpenAiError(absl::InvalidArgumentError(s.message()))),
              BaseHeaders(request_id));
}

void RespondText(const std::shared_ptr<HttpExchange>& ex, const std::string& text, const std::string& request_id) {
  ex->Respond(200, "text/plain; charset=utf-8", text, BaseHeaders(request_id));
}

}  // namespace

void HttpApi::LoadLoraAdapter(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id) {
  absl::Status s = auth_->Check(std::string(ex->request().Header("Authorization")));
  absl::StatusOr<phi::v1::LoadLoraAdapterRequest> req =
      s.ok() ? ParseLoadLoraAdapterRequest(ex->request().body, limits_) : s;
  if (!req.ok()) {
    CountRequest(kLoadRoute, req.status());
    return RespondAdminError(ex, req.status(), request_id);
  }
  // Answered from LoraAdmin's thread: only what outlives the HTTP API is captured.
  GatewayMetrics* metrics = metrics_;
  const std::string name = req->lora_name();
  generations_->lora()->Load(req->lora_name(), req->lora_path(),
                             [ex, request_id, metrics, name](absl::StatusOr<ModelSummary> m) {
                               metrics->CountRequest(kLoadRoute, CodeName(m.status()), m.ok() ? name : "");
                               if (!m.ok()) return RespondAdminError(ex, m.status(), request_id);
                               RespondText(ex, absl::StrCat("Success: LoRA adapter '", name, "' added successfully."),
                                           request_id);
                             });
}

void HttpApi::UnloadLoraAdapter(const std::shared_ptr<HttpExchange>& ex, const std::string& request_id) {
  absl::Status s = auth_->Check(std::string(ex->request().Header("Authorization")));
  absl::StatusOr<phi::v1::UnloadLoraAdapterRequest> req =
      s.ok() ? ParseUnloadLoraAdapterRequest(ex->request().body, limits_) : s;
  if (!req.ok()) {
    CountRequest(kUnloadRoute, req.status());
    return RespondAdminError(ex, req.status(), request_id);
  }
  GatewayMetrics* metrics = metrics_;
  const std::string name = req->lora_name();
  generations_->lora()->Unload(name, [ex, request_id, metrics, name](absl::Status st) {
    metrics->CountRequest(kUnloadRoute, CodeName(st));
    if (!st.ok()) return RespondAdminError(ex, st, request_id);
    RespondText(ex, absl::StrCat("Success: LoRA adapter '", name, "' removed successfully."), request_id);
  });
}

}  // namespace phi::gateway
