// phi.v1.ChatService over gRPC (sync API): auth, ChatML, and the Generator.
#ifndef PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_
#define PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_

#include "phi/v1/gateway.grpc.pb.h"
#include "services/gateway/auth.h"
#include "services/gateway/cancel_watcher.h"
#include "services/gateway/chatml.h"
#include "services/gateway/generator.h"

namespace phi::gateway {

// Builds GenerateParams from the public requests (shared with the HTTP API).
absl::StatusOr<GenerateParams> ParamsFromChat(const phi::v1::ChatRequest& req, const ChatmlOptions& chatml);
absl::StatusOr<GenerateParams> ParamsFromComplete(const phi::v1::CompleteRequest& req);

class ChatServiceImpl final : public phi::v1::ChatService::Service {
 public:
  ChatServiceImpl(Generator* generator, Auth* auth, GatewayMetrics* metrics, ChatmlOptions chatml)
      : generator_(generator), auth_(auth), metrics_(metrics), chatml_(std::move(chatml)) {}

  grpc::Status Chat(grpc::ServerContext* ctx, const phi::v1::ChatRequest* req, phi::v1::ChatResponse* resp) override;
  grpc::Status ChatStream(grpc::ServerContext* ctx, const phi::v1::ChatRequest* req,
                          grpc::ServerWriter<phi::v1::ChatStreamResponse>* writer) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const phi::v1::CompleteRequest* req,
                        phi::v1::CompleteResponse* resp) override;
  grpc::Status CompleteStream(grpc::ServerContext* ctx, const phi::v1::CompleteRequest* req,
                              grpc::ServerWriter<phi::v1::CompleteStreamResponse>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const phi::v1::ListModelsRequest* req,
                          phi::v1::ListModelsResponse* resp) override;

 private:
  // Auth, watcher, Generator::Run, metrics; `route` labels the metrics.
  absl::Status Serve(grpc::ServerContext* ctx, const std::string& route, absl::StatusOr<GenerateParams> params,
                     const std::function<bool(GenerateDelta&&)>& on_delta, GenerateResult* result);

  Generator* generator_;
  Auth* auth_;
  GatewayMetrics* metrics_;
  ChatmlOptions chatml_;
  CancelWatcher watcher_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_
