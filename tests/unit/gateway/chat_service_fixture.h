// The ChatServiceImpl test fixture: a gateway (GenerationService, WorkerPool, ChatServiceImpl) over
// gRPC against in-process fake tokenizer and worker services (fakes.h).
#ifndef PHI_TESTS_UNIT_GATEWAY_CHAT_SERVICE_FIXTURE_H_
#define PHI_TESTS_UNIT_GATEWAY_CHAT_SERVICE_FIXTURE_H_

#include <gtest/gtest.h>

#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include "services/gateway/chat_service.h"
#include "tests/unit/gateway/fakes.h"

namespace phi::gateway::testing {

class ChatServiceTest : public ::testing::Test {
 protected:
  void Start(int n_workers = 1, std::vector<std::string> tokenizer_addrs = {}, std::string keys = "",
             int max_concurrent = 0) {
    tok_server_ = std::make_unique<InProcessServer>(&tokenizer_);
    for (int i = 0; i < n_workers; ++i) {
      workers_.push_back(std::make_unique<FakeWorker>());
      worker_servers_.push_back(std::make_unique<InProcessServer>(workers_.back().get()));
    }
    tokenizer_addrs.push_back(tok_server_->address());
    tok_client_ = *TokenizerClient::Create(tokenizer_addrs);
    WorkerPoolOptions po;
    for (auto& s : worker_servers_) {
      if (!po.workers.empty()) po.workers += ',';  // not `"," + ...`: GCC 12's -Wrestrict misfires on it
      po.workers += s->address();
    }
    po.health_interval_seconds = 0.05;
    po.status_timeout_seconds = status_timeout_seconds_;
    pool_ = *WorkerPool::Create(po, &registry_);
    metrics_ = std::make_unique<GatewayMetrics>(&registry_);
    generations_ = std::make_unique<GenerationService>(tok_client_.get(), pool_.get(), metrics_.get(), gen_options_);
    auth_ = *Auth::Create("", keys, max_concurrent);
    service_ = std::make_unique<ChatServiceImpl>(generations_.get(), auth_.get(), metrics_.get(), ChatmlOptions{});
    server_ = std::make_unique<InProcessServer>(service_.get());
    stub_ = phi::v1::ChatService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  static phi::v1::ChatRequest Hello() {
    phi::v1::ChatRequest req;
    auto* m = req.add_messages();
    m->set_role(phi::v1::ROLE_USER);
    m->set_content("hi");
    return req;
  }

  std::string StreamText(const phi::v1::ChatRequest& req, phi::v1::ChatStreamResponse* last, grpc::Status* status) {
    grpc::ClientContext ctx;
    auto reader = stub_->ChatStream(&ctx, req);
    std::string text;
    phi::v1::ChatStreamResponse m;
    while (reader->Read(&m)) {
      text += m.text_delta();
      *last = m;
    }
    *status = reader->Finish();
    return text;
  }

  // Worker 0 reports a model whose generation_config.json samples at `temperature` and stops
  // at `max_new_tokens`; returns once the pool has read it.
  void ServeModelDefaults(float temperature, int32_t max_new_tokens) {
    phi::v1::GetStatusResponse::GenerationDefaults d;
    d.mutable_sampling()->set_temperature(temperature);
    d.set_max_new_tokens(max_new_tokens);
    {
      std::lock_guard<std::mutex> l(workers_[0]->mu);
      workers_[0]->generation_defaults = d;
    }
    ASSERT_TRUE(Eventually([&] {
      std::vector<ModelSummary> m = pool_->Models();
      return m.size() == 1 && m[0].default_temperature == temperature && m[0].default_max_new_tokens == max_new_tokens;
    }));
  }

  template <typename Pred>
  static bool Eventually(Pred p, int ms = 3000) {
    for (int i = 0; i < ms / 10; ++i) {
      if (p()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return p();
  }

  // Sends `bytes` as the request of ChatService method `method` ("Chat", "ChatStream", ...):
  // what a client whose text is not UTF-8 puts on the wire.
  grpc::Status SendRaw(const std::string& method, const std::string& bytes) {
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    grpc::Slice slice(bytes);
    grpc::ByteBuffer req(&slice, 1), resp;
    grpc::ClientContext ctx;
    const std::string path = "/phi.v1.ChatService/" + method;
    if (method.ends_with("Stream")) {
      grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::SERVER_STREAMING);
      std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
          grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel.get(), rpc, &ctx, req));
      while (reader->Read(&resp)) {
      }
      return reader->Finish();
    }
    grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
    return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(channel.get(), rpc, &ctx, req,
                                                                                  &resp);
  }

  double Metric(const std::string& line_start) {
    std::string text = registry_.Serialize();
    size_t at = text.find("\n" + line_start + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + line_start.size() + 2));
  }

  GenerationServiceOptions gen_options_;
  double status_timeout_seconds_ = 2.0;
  metrics::Registry registry_;
  FakeTokenizer tokenizer_;
  std::unique_ptr<InProcessServer> tok_server_;
  std::vector<std::unique_ptr<FakeWorker>> workers_;
  std::vector<std::unique_ptr<InProcessServer>> worker_servers_;
  std::unique_ptr<TokenizerClient> tok_client_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<GatewayMetrics> metrics_;
  std::unique_ptr<GenerationService> generations_;
  std::unique_ptr<Auth> auth_;
  std::unique_ptr<ChatServiceImpl> service_;
  std::unique_ptr<InProcessServer> server_;
  std::unique_ptr<phi::v1::ChatService::Stub> stub_;
};

}  // namespace phi::gateway::testing

#endif  // PHI_TESTS_UNIT_GATEWAY_CHAT_SERVICE_FIXTURE_H_
