// WorkerServiceImpl over the engine and the paged fake runner, through a real in-process
// gRPC channel: readiness, streaming, status codes, cancellation, deadlines, Cancel by id,
// and the callback API's own cases: slow readers (merged messages), 64 concurrent streams,
// a client gone while a write is in flight, an error after some tokens, reactors deleted.
#include "services/worker/service/worker_service.h"

#include <atomic>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "services/worker/service/generate_call.h"
#include "services/worker/service/proto_convert.h"
#include "tests/unit/worker/engine/engine_test_util.h"
#include "tests/unit/worker/engine/fake_model_runner.h"

namespace phi::worker {
namespace testing {

// Waits until the fake runner has run `steps` steps in all (the engine's progress, whatever
// the machine's load).
bool WaitForSteps(const FakeModelRunner& runner, int64_t steps) {
  for (int i = 0; i < 2000 && runner.steps() < steps; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return runner.steps() >= steps;
}

}  // namespace testing
namespace {

using testing::FakeModelRunner;

class WorkerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.num_kv_blocks = kv_blocks_;
    o.block_size = 8;
    o.eos_token_ids = {3};
    o.registry = &registry_;
    engine_ = std::move(Engine::Create(&runner_, o)).value();
    service_ = std::make_unique<WorkerServiceImpl>("fake", 1, &registry_);
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = phi::v1::WorkerService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    engine_->Shutdown();
    // Every call's reactor is deleted once gRPC is done with it (OnDone precedes the end of
    // Shutdown, but a pool thread may drop the last reference just after).
    for (int i = 0; i < 200 && GenerateCall::live() != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(GenerateCall::live(), 0);
  }
  void MakeReady() {
    service_->SetEngine(engine_.get());
    service_->SetReady(true);
  }

  struct Result {
    grpc::Status status;
    std::vector<int32_t> tokens;
    std::vector<phi::v1::GenerateResponse> messages;
  };
  Result Generate(const phi::v1::GenerateRequest& req, int timeout_ms = 10000) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    auto reader = stub_->Generate(&ctx, req);
    Result r;
    phi::v1::GenerateResponse m;
    while (reader->Read(&m)) {
      r.tokens.insert(r.tokens.end(), m.token_ids().begin(), m.token_ids().end());
      r.messages.push_back(m);
    }
    r.status = reader->Finish();
    return r;
  }
  static phi::v1::GenerateRequest Req(std::vector<int32_t> prompt, int32_t max_new) {
    phi::v1::GenerateRequest r;
    for (int32_t t : prompt) r.add_prompt_ids(t);
    r.mutable_stopping()->set_max_new_tokens(max_new);
    r.mutable_stopping()->set_ignore_eos(true);
    return r;
  }
  void ExpectIdle() {
    ASSERT_TRUE(testing::WaitIdle(*engine_));
    EXPECT_EQ(engine_->Status().kv_blocks_free, kv_blocks_);
  }
  // The engine's own greedy output for the same request (the fake runner is deterministic).
  std::vector<int32_t> Expected(const phi::v1::GenerateRequest& req) {
    absl::StatusOr<testing::Completion> direct = testing::RunOne(*engine_, FromProto(req));
    EXPECT_TRUE(direct.ok()) << direct.status();
    return direct.ok() ? direct->tokens : std::vector<int32_t>{};
  }
  phi::v1::GetStatusResponse RemoteStatus() {
    grpc::ClientContext ctx;
    phi::v1::GetStatusResponse s;
    EXPECT_TRUE(stub_->GetStatus(&ctx, {}, &s).ok());
    return s;
  }
  int64_t Cancelled() {
    const std::string text = registry_.Serialize();
    const std::string key = "phi_worker_requests_total{finish_reason=\"cancelled\"} ";
    const size_t at = text.find(key);
    return at == std::string::npos ? 0 : std::stoll(text.substr(at + key.size()));
  }

  int32_t kv_blocks_ = 32;
  metrics::Registry registry_;
  FakeModelRunner runner_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<WorkerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<phi::v1::WorkerService::Stub> stub_;
};

TEST_F(WorkerServiceTest, UnavailableAndNotReadyUntilReady) {
  Result refused = Generate(Req({1, 2}, 3));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(refused.status.error_message(), "worker is not ready (loading the model or draining)");
  EXPECT_TRUE(refused.messages.empty());
  service_->SetEngine(engine_.get());  // an engine but not ready (warming up, draining)
  EXPECT_EQ(Generate(Req({1, 2}, 3)).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(engine_->Status().waiting + engine_->Status().running, 0);
  grpc::ClientContext ctx;
  phi::v1::GetStatusResponse s;
  ASSERT_TRUE(stub_->GetStatus(&ctx, {}, &s).ok());
  EXPECT_FALSE(s.ready());
  EXPECT_NE(registry_.Serialize().find("phi_worker_ready 0"), std::string::npos);
  MakeReady();
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stub_->GetStatus(&ctx2, {}, &s).ok());
  EXPECT_TRUE(s.ready());
  EXPECT_EQ(s.model(), "fake");
  EXPECT_EQ(s.kv_blocks_total(), 32);
  EXPECT_EQ(s.max_context_tokens(), 512);
  EXPECT_EQ(s.vocab_size(), 64);
  EXPECT_NE(registry_.Serialize().find("phi_worker_ready 1"), std::string::npos);
}

TEST_F(WorkerServiceTest, StreamsTokensThenFinalMessage) {
  MakeReady();
  runner_.set_step_delay_us(2000);  // several messages, not one
  phi::v1::GenerateRequest req = Req({5, 6, 7}, 10);
  req.set_request_id("r1");
  req.set_logprobs(true);
  req.set_top_logprobs(2);
  Result r = Generate(req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.tokens.size(), 10u);
  EXPECT_GT(r.messages.size(), 1u);
  const phi::v1::GenerateResponse& last = r.messages.back();
  EXPECT_EQ(last.request_id(), "r1");
  EXPECT_EQ(last.finish_reason(), phi::v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 3);
  EXPECT_EQ(last.usage().completion_tokens(), 10);
  int logprobs = 0;
  for (const auto& m : r.messages) {
    EXPECT_EQ(m.logprobs_size(), m.token_ids_size());
    logprobs += m.logprobs_size();
    if (&m != &last) {
      EXPECT_EQ(m.finish_reason(), phi::v1::FINISH_REASON_UNSPECIFIED);
    }
  }
  EXPECT_EQ(logprobs, 10);
  // Same request through the engine directly: same tokens (the service adds nothing).
  auto direct = testing::RunOne(*engine_, FromProto(Req({5, 6, 7}, 10)));
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(direct->tokens, r.tokens);
}

TEST_F(WorkerServiceTest, ProtoDefaultsMeanOff) {
  phi::v1::GenerateRequest req = Req({1}, 0);
  const GenerationRequest r = FromProto(req);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.0f);
  EXPECT_FALSE(r.seed.has_value());
  req.mutable_sampling()->set_seed(0);  // an explicit 0 is a seed
  EXPECT_TRUE(FromProto(req).seed.has_value());
}

TEST_F(WorkerServiceTest, UnsetSamplingFieldsGetTheModelDefaults) {
  const model::GenerationDefaults defaults{0.7f, 0.9f, 40, 1.1f, 99};
  phi::v1::GenerateRequest req = Req({1}, 0);
  GenerationRequest r = FromProto(req, defaults);
  EXPECT_EQ(r.sampling.temperature, 0.0f);  // 0 in a request is greedy, whatever the model says
  EXPECT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.1f);
  req.mutable_sampling()->set_top_p(0.5f);
  req.mutable_sampling()->set_top_k(3);
  req.mutable_sampling()->set_repetition_penalty(1.0f);
  r = FromProto(req, defaults);  // a request's own values win
  EXPECT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.0f);

  service_->SetGenerationDefaults(defaults);
  MakeReady();
  const phi::v1::GetStatusResponse s = RemoteStatus();
  ASSERT_TRUE(s.has_generation_defaults());
  const phi::v1::SamplingParams& d = s.generation_defaults().sampling();
  EXPECT_EQ(d.temperature(), 0.7f);
  EXPECT_EQ(d.top_p(), 0.9f);
  EXPECT_EQ(d.top_k(), 40);
  EXPECT_EQ(d.repetition_penalty(), 1.1f);
  EXPECT_EQ(s.generation_defaults().max_new_tokens(), 99);
}

TEST_F(WorkerServiceTest, ErrorsKeepTheirCodeAndNameTheField) {
  MakeReady();
  phi::v1::GenerateRequest bad = Req({1}, 4);
  bad.mutable_sampling()->set_top_p(1.5f);
  Result r = Generate(bad);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("sampling.top_p"), std::string::npos);
  r = Generate(Req({}, 4));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  r = Generate(Req({1, 1000}, 4));
  EXPECT_NE(r.status.error_message().find("prompt_ids[1]"), std::string::npos);
  r = Generate(Req(std::vector<int32_t>(200, 1), 200));  // 399 tokens > 32 blocks x 8
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  runner_.FailNextSteps(1);
  r = Generate(Req({1, 2}, 4));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INTERNAL);
  ExpectIdle();
}

TEST_F(WorkerServiceTest, ClientCancelMidStreamFreesBlocks) {
  MakeReady();
  runner_.set_step_delay_us(1000);
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Req({1, 2, 3}, 200));
  phi::v1::GenerateResponse m;
  ASSERT_TRUE(reader->Read(&m));
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectIdle();
  EXPECT_NE(registry_.Serialize().find("phi_worker_requests_total{finish_reason=\"cancelled\"} 1"),
            std::string::npos);
}

TEST_F(WorkerServiceTest, DeadlineEndsTheRequest) {
  MakeReady();
  runner_.set_step_delay_us(1000);
  Result r = Generate(Req({1, 2, 3}, 200), /*timeout_ms=*/50);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(r.tokens.size(), 200u);
  ExpectIdle();
}

TEST_F(WorkerServiceTest, CancelById) {
  MakeReady();
  runner_.set_step_delay_us(1000);
  phi::v1::GenerateRequest req = Req({1, 2, 3}, 200);
  req.set_request_id("victim");
  Result r;
  std::thread t([&] { r = Generate(req); });
  const int64_t steps_before = runner_.steps();
  EXPECT_TRUE(testing::WaitForSteps(runner_, steps_before + 5));  // running, far from its 200 tokens
  grpc::ClientContext ctx;
  phi::v1::CancelRequest cancel;
  cancel.set_request_id("victim");
  phi::v1::CancelResponse resp;
  EXPECT_TRUE(stub_->Cancel(&ctx, cancel, &resp).ok());
  t.join();
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.messages.back().finish_reason(), phi::v1::FINISH_REASON_CANCELLED);
  grpc::ClientContext ctx2;
  EXPECT_EQ(stub_->Cancel(&ctx2, cancel, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectIdle();
}

// The slowest reader: it reads nothing until the engine has made every token. The in-process
// transport completes a write only when the client reads, so the first message stays in flight
// and everything after it must arrive merged into the next one, each token exactly once.
TEST_F(WorkerServiceTest, SlowReaderGetsMergedMessagesAndEveryTokenOnce) {
  MakeReady();
  phi::v1::GenerateRequest req = Req({9, 8, 7}, 60);
  req.set_logprobs(true);
  const std::vector<int32_t> expected = Expected(req);
  runner_.set_step_delay_us(200);
  const int64_t steps_before = runner_.steps();
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, req);
  ASSERT_TRUE(testing::WaitForSteps(runner_, steps_before + 60));  // one token a step
  ASSERT_TRUE(testing::WaitIdle(*engine_));  // the engine is done; the client has read nothing
  std::vector<int32_t> tokens;
  int messages = 0, logprobs = 0;
  phi::v1::GenerateResponse m;
  while (reader->Read(&m)) {
    ++messages;
    tokens.insert(tokens.end(), m.token_ids().begin(), m.token_ids().end());
    EXPECT_EQ(m.logprobs_size(), m.token_ids_size());
    logprobs += m.logprobs_size();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(m.finish_reason(), phi::v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(m.usage().completion_tokens(), 60);
  EXPECT_EQ(tokens, expected);
  EXPECT_EQ(logprobs, 60);
  EXPECT_LE(messages, 3) << "60 tokens in " << messages << " messages: what piled up was not merged";
  ExpectIdle();
}

// The client cancels mid-stream: CANCELLED, the engine's slot and KV blocks come back, and the
// engine saw a cancellation (not a request that ran to its length).
TEST_F(WorkerServiceTest, CancelMidStreamFreesTheEngineSlot) {
  MakeReady();
  runner_.set_step_delay_us(1000);
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Req({4, 5}, 200));
  phi::v1::GenerateResponse m;
  ASSERT_TRUE(reader->Read(&m));
  ASSERT_TRUE(reader->Read(&m));
  EXPECT_EQ(RemoteStatus().running(), 1);
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectIdle();
  const phi::v1::GetStatusResponse s = RemoteStatus();
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(s.waiting(), 0);
  EXPECT_EQ(s.kv_blocks_free(), kv_blocks_);
  EXPECT_EQ(Cancelled(), 1);
  EXPECT_LT(runner_.tokens_computed(), 150);  // it left the batch, it did not run to 200
}

// The client stops reading, so the service's next write stays in flight (the in-process
// transport completes a write only when the client reads), and then goes away.
TEST_F(WorkerServiceTest, ClientGoneWhileAWriteIsInFlight) {
  MakeReady();
  runner_.set_step_delay_us(2000);  // 200 tokens take >= 400 ms: the cancel lands mid-generation
  for (int round = 0; round < 3; ++round) {
    grpc::ClientContext ctx;
    auto reader = stub_->Generate(&ctx, Req({1, 2, 3}, 200));
    phi::v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // tokens pile up behind the write
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    ExpectIdle();
  }
  EXPECT_EQ(Cancelled(), 3);
  // The service still serves, and correctly, afterwards.
  Result r = Generate(Req({6, 6}, 12));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.tokens, Expected(Req({6, 6}, 12)));
}

// A step fails after some tokens were made: the tokens the client has not yet received still
// reach it (merged into one message before the status), then INTERNAL.
TEST_F(WorkerServiceTest, ErrorAfterSomeTokensSendsThemBeforeTheStatus) {
  MakeReady();
  const phi::v1::GenerateRequest req = Req({2, 4, 6}, 200);
  const std::vector<int32_t> expected = Expected(req);
  runner_.set_step_delay_us(2000);
  const int64_t steps_before = runner_.steps();
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, req);
  std::vector<int32_t> tokens;
  phi::v1::GenerateResponse m;
  ASSERT_TRUE(reader->Read(&m));
  tokens.assign(m.token_ids().begin(), m.token_ids().end());
  // The client reads nothing more while ten tokens pile up behind the write in flight.
  ASSERT_TRUE(testing::WaitForSteps(runner_, steps_before + 10));
  runner_.FailNextSteps(1);
  ASSERT_TRUE(testing::WaitIdle(*engine_));
  while (reader->Read(&m)) {
    tokens.insert(tokens.end(), m.token_ids().begin(), m.token_ids().end());
    EXPECT_EQ(m.finish_reason(), phi::v1::FINISH_REASON_UNSPECIFIED);
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INTERNAL);
  ASSERT_GE(tokens.size(), 9u);
  ASSERT_LT(tokens.size(), expected.size());
  EXPECT_EQ(tokens, std::vector<int32_t>(expected.begin(), expected.begin() + tokens.size()));
  ExpectIdle();
}

class WorkerService64Test : public WorkerServiceTest {
 protected:
  WorkerService64Test() { kv_blocks_ = 256; }
};

// 64 streams at once, each its own prompt: every stream gets exactly its greedy tokens and
// the engine ran them in shared steps.
TEST_F(WorkerService64Test, SixtyFourConcurrentStreamsComplete) {
  MakeReady();
  runner_.set_step_delay_us(200);
  constexpr int kStreams = 64;
  std::vector<phi::v1::GenerateRequest> reqs;
  for (int i = 0; i < kStreams; ++i) reqs.push_back(Req({1 + i % 60, 2 + i / 60, 3}, 16 + i % 8));
  std::vector<std::vector<int32_t>> expected;
  for (const auto& r : reqs) expected.push_back(Expected(r));
  std::vector<Result> results(kStreams);
  std::vector<std::thread> clients;
  std::atomic<int> started{0};
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      started.fetch_add(1);
      while (started.load() < kStreams) std::this_thread::yield();
      results[i] = Generate(reqs[i], 30000);
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].tokens.size(), static_cast<size_t>(16 + i % 8)) << i;
    EXPECT_EQ(results[i].tokens, expected[i]) << i;
    EXPECT_EQ(results[i].messages.back().usage().completion_tokens(), 16 + i % 8) << i;
  }
  EXPECT_GT(runner_.max_batch(), 8);  // the streams shared steps
  ExpectIdle();
}

}  // namespace
}  // namespace phi::worker
