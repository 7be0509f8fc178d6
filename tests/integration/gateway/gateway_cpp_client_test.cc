// A C++ gRPC client against the real stack (run under run_with_stack.py, which
// exports PHI_GATEWAY_ADDR and PHI_WORKER_ADDR): a multi-turn chat, streaming
// equal to unary, and cancellation reaching the worker.
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "phi/v1/gateway.grpc.pb.h"
#include "phi/v1/worker.grpc.pb.h"

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

class CppClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(Env("PHI_GATEWAY_ADDR").empty()) << "run under run_with_stack.py";
    stub_ = phi::v1::ChatService::NewStub(grpc::CreateChannel(Env("PHI_GATEWAY_ADDR"),
                                                              grpc::InsecureChannelCredentials()));
    worker_ = phi::v1::WorkerService::NewStub(grpc::CreateChannel(Env("PHI_WORKER_ADDR"),
                                                                  grpc::InsecureChannelCredentials()));
  }
  static void Add(phi::v1::ChatRequest* r, phi::v1::Role role, const std::string& text) {
    auto* m = r->add_messages();
    m->set_role(role);
    m->set_content(text);
  }
  // Requests the worker holds (queued or in the batch).
  int Running() {
    grpc::ClientContext ctx;
    phi::v1::GetStatusResponse s;
    EXPECT_TRUE(worker_->GetStatus(&ctx, {}, &s).ok());
    return s.running() + s.waiting();
  }
  // Polls until Running() == want has held for 5 reads 20 ms apart, or 5 s passed.
  bool Settles(int want) {
    auto t0 = std::chrono::steady_clock::now();
    int streak = 0;
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
      streak = Running() == want ? streak + 1 : 0;
      if (streak >= 5) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  std::unique_ptr<phi::v1::ChatService::Stub> stub_;
  std::unique_ptr<phi::v1::WorkerService::Stub> worker_;
};

TEST_F(CppClientTest, MultiTurnChatStreamingEqualsUnary) {
  phi::v1::ChatRequest req;
  req.mutable_stopping()->set_max_new_tokens(12);
  Add(&req, phi::v1::ROLE_SYSTEM, "You are a C++ test.");
  Add(&req, phi::v1::ROLE_USER, "First question?");
  int last_prompt_tokens = 0;
  for (int turn = 0; turn < 3; ++turn) {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse unary;
    grpc::Status st = stub_->Chat(&ctx, req, &unary);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_GT(unary.usage().completion_tokens(), 0);
    EXPECT_GT(unary.usage().prompt_tokens(), last_prompt_tokens);
    last_prompt_tokens = unary.usage().prompt_tokens();

    grpc::ClientContext sctx;
    auto reader = stub_->ChatStream(&sctx, req);
    phi::v1::ChatStreamResponse m;
    std::string streamed;
    phi::v1::FinishReason finish = phi::v1::FINISH_REASON_UNSPECIFIED;
    while (reader->Read(&m)) {
      streamed += m.text_delta();
      if (m.finish_reason() != phi::v1::FINISH_REASON_UNSPECIFIED) finish = m.finish_reason();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(streamed, unary.text()) << "turn " << turn;
    EXPECT_EQ(finish, unary.finish_reason());
    Add(&req, phi::v1::ROLE_ASSISTANT, unary.text());
    Add(&req, phi::v1::ROLE_USER, "Next question " + std::to_string(turn));
  }
}

TEST_F(CppClientTest, CancelStopsTheWorkerRequest) {
  phi::v1::ChatRequest req;
  req.mutable_stopping()->set_max_new_tokens(1900);
  req.mutable_stopping()->set_ignore_eos(true);
  Add(&req, phi::v1::ROLE_USER, "Go on and on.");
  grpc::ClientContext ctx;
  auto reader = stub_->ChatStream(&ctx, req);
  phi::v1::ChatStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  // 1900 tokens take the tiny CPU model well over a second; we stop reading
  // after one message, so the worker is still generating.
  EXPECT_TRUE(Settles(1));
  ctx.TryCancel();
  reader->Finish();
  EXPECT_TRUE(Settles(0));
}

}  // namespace
