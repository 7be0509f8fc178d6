// phi.v1.ChatService over gRPC: auth, ChatML, and the Generator.
#ifndef PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_
#define PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_

#include "phi/v1/gateway.grpc.pb.h"
#include "services/gateway/auth.h"
#include "services/gateway/chatml.h"
#include "services/gateway/generator.h"

namespace phi::gateway {

// Builds GenerateParams from the public requests (shared with the HTTP API).
absl::StatusOr<GenerateParams> ParamsFromChat(const phi::v1::ChatRequest& req, const ChatmlOptions& chatml);
absl::StatusOr<GenerateParams> ParamsFromComplete(const phi::v1::CompleteRequest& req);

// The callback API: a generation runs as a chain of gRPC callbacks from the worker's stream to
// the client's (generation.h), with no thread per call; a client that goes away cancels the
// worker stream through OnCancel.
class ChatServiceImpl final : public phi::v1::ChatService::CallbackService {
 public:
  ChatServiceImpl(Generator* generator, Auth* auth, GatewayMetrics* metrics, ChatmlOptions chatml)
      : generator_(generator), auth_(auth), metrics_(metrics), chatml_(std::move(chatml)) {}

  grpc::ServerUnaryReactor* Chat(grpc::CallbackServerContext* ctx, const phi::v1::ChatRequest* req,
                                 phi::v1::ChatResponse* resp) override;
  grpc::ServerWriteReactor<phi::v1::ChatStreamResponse>* ChatStream(grpc::CallbackServerContext* ctx,
                                                                     const phi::v1::ChatRequest* req) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx, const phi::v1::CompleteRequest* req,
                                     phi::v1::CompleteResponse* resp) override;
  grpc::ServerWriteReactor<phi::v1::CompleteStreamResponse>* CompleteStream(
      grpc::CallbackServerContext* ctx, const phi::v1::CompleteRequest* req) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx, const phi::v1::ListModelsRequest* req,
                                       phi::v1::ListModelsResponse* resp) override;

  // What a call needs from the service (the calls live in chat_service.cc).
  struct Deps {
    Generator* generator;
    Auth* auth;
    GatewayMetrics* metrics;
  };

 private:
  Deps deps() { return {generator_, auth_, metrics_}; }

  Generator* generator_;
  Auth* auth_;
  GatewayMetrics* metrics_;
  ChatmlOptions chatml_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_
