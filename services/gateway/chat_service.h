// phi.v1.ChatService over gRPC: auth, ChatML, and the GenerationService.
#ifndef PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_
#define PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_

#include "phi/v1/gateway.grpc.pb.h"
#include "services/gateway/auth.h"
#include "services/gateway/chatml.h"
#include "services/gateway/generation_service.h"
#include "services/gateway/request_params.h"

namespace phi::gateway {

// Parses a request received as bytes into `msg` (ParseRequestBytes, request_params.h: text
// fields checked for UTF-8 first, naming the field).
absl::Status ParseRequest(const grpc::ByteBuffer& raw, google::protobuf::Message* msg);

// The generation methods take their request as bytes: proto3 `string` fields that are not valid
// UTF-8 fail protobuf's parse inside gRPC, before any code of ours runs, and the client gets a
// bare status with no field named. ParseRequest checks the text fields itself and then parses.
// The public proto stays `string` (clients keep passing text); the wire format is the same.
// LoadLoraAdapter and UnloadLoraAdapter too (a path is the client's bytes).
using RawRequestChatService = phi::v1::ChatService::WithRawCallbackMethod_Chat<
    phi::v1::ChatService::WithRawCallbackMethod_ChatStream<phi::v1::ChatService::WithRawCallbackMethod_Complete<
        phi::v1::ChatService::WithRawCallbackMethod_CompleteStream<phi::v1::ChatService::WithCallbackMethod_ListModels<
            phi::v1::ChatService::WithRawCallbackMethod_LoadLoraAdapter<
                phi::v1::ChatService::WithRawCallbackMethod_UnloadLoraAdapter<phi::v1::ChatService::Service>>>>>>>;

// The callback API: a generation runs as a chain of gRPC callbacks from the worker's stream to
// the client's (generation.h), with no thread per call; a client that goes away cancels the
// worker stream through OnCancel.
class ChatServiceImpl final : public RawRequestChatService {
 public:
  ChatServiceImpl(GenerationService* generations, Auth* auth, GatewayMetrics* metrics, ChatmlOptions chatml)
      : generations_(generations), auth_(auth), metrics_(metrics), chatml_(std::move(chatml)) {}

  // Requests are a ChatRequest or CompleteRequest, responses the matching response messages,
  // as bytes (see RawRequestChatService).
  grpc::ServerUnaryReactor* Chat(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                 grpc::ByteBuffer* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* ChatStream(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* req) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* CompleteStream(grpc::CallbackServerContext* ctx,
                                                             const grpc::ByteBuffer* req) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx, const phi::v1::ListModelsRequest* req,
                                       phi::v1::ListModelsResponse* resp) override;
  // LoRA adapters (lora_admin.h): behind the API keys; the workers are called on the admin
  // thread, which finishes the call.
  grpc::ServerUnaryReactor* LoadLoraAdapter(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                            grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* UnloadLoraAdapter(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                              grpc::ByteBuffer* resp) override;

  // What a call needs from the service (the calls live in chat_service.cc).
  struct Deps {
    GenerationService* generations;
    Auth* auth;
    GatewayMetrics* metrics;
  };

 private:
  Deps deps() { return {generations_, auth_, metrics_}; }

  GenerationService* generations_;
  Auth* auth_;
  GatewayMetrics* metrics_;
  ChatmlOptions chatml_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_CHAT_SERVICE_H_
