// LoadAdapter / UnloadAdapter / GetStatus.adapters and GenerateRequest.adapter on
// WorkerServiceImpl over the engine and the fake runner (its adapters change its logits),
// through an in-process channel: the round trip, every refusal by code and field, and loads
// that read files on loader threads while Generate keeps answering.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "services/worker/lora/lora_adapter.h"
#include "services/worker/service/generate_call.h"
#include "services/worker/service/worker_service.h"
#include "tests/unit/worker/engine/engine_test_util.h"
#include "tests/unit/worker/engine/fake_model_runner.h"

namespace phi::worker {
namespace {

using testing::FakeModelRunner;

class AdapterRpcTest : public ::testing::Test {
 protected:
  // `world_size` > 1: LoadAdapter probes the new adapter with a one-token request.
  void Start(int32_t slots, bool with_loader = true, int32_t world_size = 1) {
    runner_.set_adapter_slots(slots);
    EngineOptions o;
    o.num_kv_blocks = 64;
    o.block_size = 8;
    o.eos_token_ids = {3};
    o.registry = &registry_;
    o.max_adapters = 3;
    engine_ = std::move(Engine::Create(&runner_, o)).value();
    service_ = std::make_unique<WorkerServiceImpl>("phi-1_5", world_size, &registry_);
    WorkerServiceImpl::AdapterLoader loader;
    if (with_loader) {
      loader = [this](const std::string& name,
                      const std::string& path) -> absl::StatusOr<std::shared_ptr<const lora::LoraAdapter>> {
        std::unique_lock<std::mutex> lock(mu_);
        ++loading_;
        loader_threads_.push_back(std::this_thread::get_id());
        cv_.notify_all();
        cv_.wait(lock, [&] { return !hold_loads_; });
        --loading_;
        if (path.find("missing") != std::string::npos) return absl::NotFoundError(path + "/adapter_config.json: no such file");
        if (path.find("bad") != std::string::npos) {
          return absl::InvalidArgumentError(path + "/adapter_config.json: peft_type \"IA3\" is not LORA");
        }
        auto a = std::make_shared<lora::LoraAdapter>();
        a->name = name;
        a->path = path;
        a->rank = 8;
        a->base_model = "microsoft/phi-1_5";
        return a;
      };
    }
    service_->SetAdapterSupport(loader, slots);
    service_->SetEngine(engine_.get());
    service_->SetReady(true);
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = phi::v1::WorkerService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  void TearDown() override {
    Release();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (engine_) engine_->Shutdown();
    for (int i = 0; i < 200 && GenerateCall::live() != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_loads_ = true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_loads_ = false;
    cv_.notify_all();
  }
  bool WaitLoading(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return loading_ == n; });
  }

  grpc::Status Load(const std::string& name, const std::string& path, phi::v1::LoadAdapterResponse* out = nullptr) {
    grpc::ClientContext ctx;
    phi::v1::LoadAdapterRequest req;
    req.set_name(name);
    req.set_path(path);
    phi::v1::LoadAdapterResponse resp;
    grpc::Status st = stub_->LoadAdapter(&ctx, req, &resp);
    if (out != nullptr) *out = resp;
    return st;
  }
  grpc::Status Unload(const std::string& name) {
    grpc::ClientContext ctx;
    phi::v1::UnloadAdapterRequest req;
    req.set_name(name);
    phi::v1::UnloadAdapterResponse resp;
    return stub_->UnloadAdapter(&ctx, req, &resp);
  }
  phi::v1::GetStatusResponse Status() {
    grpc::ClientContext ctx;
    phi::v1::GetStatusResponse s;
    EXPECT_TRUE(stub_->GetStatus(&ctx, {}, &s).ok());
    return s;
  }
  struct Result {
    grpc::Status status;
    std::vector<int32_t> tokens;
  };
  Result Generate(const std::string& adapter, std::vector<int32_t> prompt = {1, 2, 4, 5}) {
    phi::v1::GenerateRequest r;
    for (int32_t t : prompt) r.add_prompt_ids(t);
    r.mutable_stopping()->set_max_new_tokens(12);
    r.mutable_stopping()->set_ignore_eos(true);
    r.set_adapter(adapter);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto reader = stub_->Generate(&ctx, r);
    Result out;
    phi::v1::GenerateResponse m;
    while (reader->Read(&m)) out.tokens.insert(out.tokens.end(), m.token_ids().begin(), m.token_ids().end());
    out.status = reader->Finish();
    return out;
  }

  metrics::Registry registry_;
  FakeModelRunner runner_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<WorkerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<phi::v1::WorkerService::Stub> stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_loads_ = false;
  int loading_ = 0;
  std::vector<std::thread::id> loader_threads_;
};

TEST_F(AdapterRpcTest, LoadGenerateUnload) {
  Start(2);
  phi::v1::LoadAdapterResponse loaded;
  ASSERT_TRUE(Load("dpo", "/adapters/dpo", &loaded).ok());
  EXPECT_EQ(loaded.adapter().name(), "dpo");
  EXPECT_EQ(loaded.adapter().path(), "/adapters/dpo");
  EXPECT_EQ(loaded.adapter().rank(), 8);
  EXPECT_EQ(loaded.adapter().base_model(), "microsoft/phi-1_5");
  phi::v1::GetStatusResponse s = Status();
  EXPECT_EQ(s.max_adapter_slots(), 2);
  ASSERT_EQ(s.adapters_size(), 1);
  EXPECT_EQ(s.adapters(0).name(), "dpo");
  EXPECT_FALSE(s.adapters(0).resident());  // installed when a request needs it

  const Result base = Generate("");
  const Result dpo = Generate("dpo");
  const Result again = Generate("dpo");
  ASSERT_TRUE(base.status.ok()) << base.status.error_message();
  ASSERT_TRUE(dpo.status.ok()) << dpo.status.error_message();
  EXPECT_EQ(dpo.tokens.size(), 12u);
  EXPECT_NE(dpo.tokens, base.tokens);
  EXPECT_EQ(dpo.tokens, again.tokens);
  EXPECT_TRUE(Status().adapters(0).resident());
  EXPECT_EQ(loader_threads_.size(), 1u);

  ASSERT_TRUE(Unload("dpo").ok());
  EXPECT_EQ(Status().adapters_size(), 0);
  Result gone = Generate("dpo");
  EXPECT_EQ(gone.status.error_code(), grpc::StatusCode::NOT_FOUND) << gone.status.error_message();
  EXPECT_EQ(Unload("dpo").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Generate("").tokens, base.tokens);
}

TEST_F(AdapterRpcTest, BadInputsAreRefusedByField) {
  Start(2);
  struct Case {
    std::string name, path;
    grpc::StatusCode code;
    std::string message_start;
  };
  const std::vector<Case> cases = {
      {"", "/a", grpc::StatusCode::INVALID_ARGUMENT, "name: required"},
      {"a/b", "/a", grpc::StatusCode::INVALID_ARGUMENT, "name: byte 1"},
      {std::string(129, 'a'), "/a", grpc::StatusCode::INVALID_ARGUMENT, "name: 129 bytes, at most 128"},
      {"phi-1_5", "/a", grpc::StatusCode::INVALID_ARGUMENT, "name: 'phi-1_5' is the base model's name"},
      {"x", "", grpc::StatusCode::INVALID_ARGUMENT, "path: required"},
      {"x", std::string(4097, 'p'), grpc::StatusCode::INVALID_ARGUMENT, "path: 4097 bytes, at most 4096"},
      {"x", "/adapters/missing", grpc::StatusCode::NOT_FOUND, "/adapters/missing/adapter_config.json"},
      {"x", "/adapters/bad", grpc::StatusCode::INVALID_ARGUMENT, "/adapters/bad/adapter_config.json: peft_type"},
  };
  for (const Case& c : cases) {
    grpc::Status st = Load(c.name, c.path);
    EXPECT_EQ(st.error_code(), c.code) << c.name << " " << c.path << ": " << st.error_message();
    EXPECT_EQ(st.error_message().rfind(c.message_start, 0), 0u) << st.error_message();
  }
  ASSERT_TRUE(Load("a", "/adapters/a").ok());
  grpc::Status dup = Load("a", "/adapters/other");
  EXPECT_EQ(dup.error_code(), grpc::StatusCode::ALREADY_EXISTS) << dup.error_message();
  ASSERT_TRUE(Load("b", "/adapters/b").ok());
  ASSERT_TRUE(Load("c", "/adapters/c").ok());
  grpc::Status full = Load("d", "/adapters/d");  // EngineOptions::max_adapters = 3
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << full.error_message();
  Result bad_name = Generate("a b");
  EXPECT_EQ(bad_name.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad_name.status.error_message(), "adapter: byte 1 (0x20) is not one of A-Z a-z 0-9 . _ -");
  EXPECT_EQ(Generate("nope").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Status().adapters_size(), 3);
}

TEST_F(AdapterRpcTest, WithoutSlotsLoadingIsAFailedPrecondition) {
  Start(0);
  grpc::Status st = Load("a", "/adapters/a");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-loras 0"), std::string::npos);
  EXPECT_EQ(Status().max_adapter_slots(), 0);
  EXPECT_TRUE(loader_threads_.empty());  // refused before reading anything
}

TEST_F(AdapterRpcTest, InAGroupAnAdapterThatCannotBeInstalledIsNotRegistered) {
  Start(2, true, /*world_size=*/2);
  // What LeaderRunner::SetAdapter answers when rank 1 cannot read the folder.
  runner_.FailSetAdapter("far", absl::NotFoundError("rank 1: /adapters/far/adapter_config.json: no such file"));
  grpc::Status st = Load("far", "/adapters/far");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_NE(st.error_message().find("rank 1: /adapters/far/adapter_config.json"), std::string::npos)
      << st.error_message();
  EXPECT_EQ(Status().adapters_size(), 0);
  // One that installs is probed, resident and registered when the call answers.
  phi::v1::LoadAdapterResponse near;
  ASSERT_TRUE(Load("near", "/adapters/near", &near).ok());
  EXPECT_TRUE(near.adapter().resident());
  EXPECT_EQ(Status().adapters_size(), 1);
  EXPECT_TRUE(Generate("").status.ok());
}

TEST_F(AdapterRpcTest, NotReadyIsUnavailable) {
  Start(2);
  service_->SetReady(false);
  EXPECT_EQ(Load("a", "/adapters/a").error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AdapterRpcTest, SlowLoadsHoldNeitherGenerateNorStatusAndAreBounded) {
  Start(2);
  Hold();
  std::vector<std::thread> loads;
  std::vector<grpc::Status> results(WorkerServiceImpl::kMaxLoadingAdapters);
  for (int i = 0; i < WorkerServiceImpl::kMaxLoadingAdapters; ++i) {
    loads.emplace_back([&, i] { results[i] = Load("slow" + std::to_string(i), "/adapters/slow" + std::to_string(i)); });
  }
  ASSERT_TRUE(WaitLoading(WorkerServiceImpl::kMaxLoadingAdapters));
  // Every loader thread is busy reading: one more is refused at once, not queued.
  grpc::Status busy = Load("one-more", "/adapters/one-more");
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << busy.error_message();
  Result base = Generate("");
  EXPECT_TRUE(base.status.ok()) << base.status.error_message();
  EXPECT_EQ(base.tokens.size(), 12u);
  EXPECT_EQ(Status().adapters_size(), 0);
  Release();
  for (auto& t : loads) t.join();
  int ok = 0;
  for (const grpc::Status& st : results) ok += st.ok() ? 1 : 0;
  EXPECT_EQ(ok, 3);  // max_adapters = 3: the fourth registration is RESOURCE_EXHAUSTED
  EXPECT_EQ(Status().adapters_size(), 3);
}

}  // namespace
}  // namespace phi::worker
