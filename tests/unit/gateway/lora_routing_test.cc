// LoRA adapters at the gateway against fake workers: routing by the request's model name to the
// groups whose GetStatus lists the adapter (and prefix affinity on the adapter's hash chain),
// ListModels, load / unload over gRPC on every group (all or none), reconciling groups that
// lose an adapter, and the model label of the metrics.
#include <gtest/gtest.h>

#include "services/common/prefix_hash.h"
#include "tests/unit/gateway/chat_service_fixture.h"

namespace phi::gateway::testing {
namespace {

class LoraRoutingTest : public ChatServiceTest {
 protected:
  static phi::v1::ChatRequest HelloTo(const std::string& model) {
    phi::v1::ChatRequest req = Hello();
    req.set_model(model);
    return req;
  }
  grpc::Status Chat(const std::string& model, std::string* text = nullptr) {
    grpc::ClientContext ctx;
    phi::v1::ChatResponse resp;
    grpc::Status s = stub_->Chat(&ctx, HelloTo(model), &resp);
    if (text) *text = resp.text();
    return s;
  }
  grpc::Status Load(const std::string& name, const std::string& path, phi::v1::LoadLoraAdapterResponse* resp,
                    const std::string& key = "") {
    grpc::ClientContext ctx;
    if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
    phi::v1::LoadLoraAdapterRequest req;
    req.set_lora_name(name);
    req.set_lora_path(path);
    return stub_->LoadLoraAdapter(&ctx, req, resp);
  }
  grpc::Status Unload(const std::string& name) {
    grpc::ClientContext ctx;
    phi::v1::UnloadLoraAdapterRequest req;
    req.set_lora_name(name);
    phi::v1::UnloadLoraAdapterResponse resp;
    return stub_->UnloadLoraAdapter(&ctx, req, &resp);
  }
  std::string last_adapter(int w) {
    std::lock_guard<std::mutex> l(workers_[w]->mu);
    return workers_[w]->last_request.adapter();
  }
};

TEST_F(LoraRoutingTest, AnAdapterGoesOnlyToGroupsThatListIt) {
  Start(3);
  workers_[1]->AddAdapter("a1");
  workers_[2]->AddAdapter("a2");
  pool_->RefreshNow();
  std::string text;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(Chat("a1", &text).ok());
    EXPECT_EQ(text.substr(0, 3), "a1:");
  }
  EXPECT_EQ(workers_[1]->generates.load(), 4);
  EXPECT_EQ(workers_[0]->generates + workers_[2]->generates, 0);
  EXPECT_EQ(last_adapter(1), "a1");
  ASSERT_TRUE(Chat("a2").ok());
  EXPECT_EQ(workers_[2]->generates.load(), 1);
  EXPECT_EQ(last_adapter(2), "a2");
  // The base model (by name, or none named) runs on any group, without an adapter.
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(Chat(i % 2 ? "fake-model" : "").ok());
  EXPECT_GT(workers_[0]->generates.load(), 0);
  EXPECT_EQ(last_adapter(0), "");
}

TEST_F(LoraRoutingTest, UnknownModelIsNotFoundListingWhatIsServed) {
  Start(2);
  workers_[1]->AddAdapter("a1");
  pool_->RefreshNow();
  grpc::Status s = Chat("nope");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "model: 'nope' is not served here (served: 'fake-model', 'a1')");
  EXPECT_EQ(workers_[0]->generates + workers_[1]->generates, 0);
}

TEST_F(LoraRoutingTest, PrefixAffinityHashesFromTheAdaptersRoot) {
  Start(3);
  for (auto& w : workers_) w->AddAdapter("a");
  // The prompt's ids as the fake tokenizer gives them (see PrefersTheGroupHoldingTheCachedPrefix).
  std::vector<int32_t> ids = {1};
  for (unsigned char c : std::string("user\nhi")) ids.push_back(ByteId(c));
  ids.push_back(2);
  ids.push_back(ByteId('\n'));
  ids.push_back(1);
  for (unsigned char c : std::string("assistant\n")) ids.push_back(ByteId(c));
  ASSERT_EQ(ids.size(), 21u);
  {
    // Group 0 holds the prompt's block under the base model's chain, group 2 under the adapter's.
    std::lock_guard<std::mutex> l0(workers_[0]->mu), l2(workers_[2]->mu);
    workers_[0]->cached_hashes = common::PrefixBlockHashes(ids, 16, 1);
    workers_[2]->cached_hashes = common::PrefixBlockHashes(ids, 16, 1, common::PrefixHashRoot("a"));
  }
  ASSERT_NE(common::PrefixHashRoot("a"), common::kPrefixHashRoot);
  pool_->RefreshNow();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Chat("a").ok());
  EXPECT_EQ(workers_[2]->generates.load(), 5);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Chat("fake-model").ok());
  EXPECT_EQ(workers_[0]->generates.load(), 5);
}

TEST_F(LoraRoutingTest, ListModelsNamesEachAdaptersParent) {
  Start(2);
  workers_[0]->AddAdapter("a1", "/adapters/one");
  workers_[1]->AddAdapter("a1", "/adapters/one");
  workers_[1]->AddAdapter("a0", "/adapters/zero");
  pool_->RefreshNow();
  grpc::ClientContext ctx;
  phi::v1::ListModelsResponse resp;
  ASSERT_TRUE(stub_->ListModels(&ctx, phi::v1::ListModelsRequest(), &resp).ok());
  ASSERT_EQ(resp.models_size(), 3);
  EXPECT_EQ(resp.models(0).name(), "fake-model");
  EXPECT_EQ(resp.models(0).parent(), "");
  EXPECT_EQ(resp.models(0).ready_worker_groups(), 2);
  EXPECT_EQ(resp.models(1).name(), "a0");
  EXPECT_EQ(resp.models(1).parent(), "fake-model");
  EXPECT_EQ(resp.models(1).ready_worker_groups(), 1);
  EXPECT_EQ(resp.models(2).name(), "a1");
  EXPECT_EQ(resp.models(2).ready_worker_groups(), 2);
  EXPECT_EQ(resp.models(2).max_context_tokens(), 256);
  std::vector<ModelSummary> models = pool_->Models();
  EXPECT_EQ(models[2].root, "/adapters/one");
}

TEST_F(LoraRoutingTest, LoadGoesToEveryReadyGroupThenServes) {
  Start(2);
  phi::v1::LoadLoraAdapterResponse resp;
  grpc::Status s = Load("dpo", "/adapters/dpo", &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.model().name(), "dpo");
  EXPECT_EQ(resp.model().parent(), "fake-model");
  EXPECT_EQ(resp.model().ready_worker_groups(), 2);
  EXPECT_TRUE(workers_[0]->HasAdapter("dpo") && workers_[1]->HasAdapter("dpo"));
  // Served at once (the load refreshed the groups' status).
  std::string text;
  ASSERT_TRUE(Chat("dpo", &text).ok());
  EXPECT_EQ(text.substr(0, 4), "dpo:");
  // The same name again, or the base model's: refused.
  EXPECT_EQ(Load("dpo", "/adapters/dpo", &resp).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  s = Load("fake-model", "/adapters/dpo", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(s.error_message(), "lora_name: 'fake-model' is the base model's name");
  // Unload: from every group; then unknown.
  ASSERT_TRUE(Unload("dpo").ok());
  EXPECT_FALSE(workers_[0]->HasAdapter("dpo") || workers_[1]->HasAdapter("dpo"));
  EXPECT_EQ(Chat("dpo").error_code(), grpc::StatusCode::NOT_FOUND);
  s = Unload("dpo");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "lora_name: no adapter 'dpo' is loaded");
}

TEST_F(LoraRoutingTest, ALoadRefusedByOneGroupIsUndoneOnTheOthers) {
  Start(3);
  workers_[1]->refuse_load_code = grpc::StatusCode::INVALID_ARGUMENT;
  phi::v1::LoadLoraAdapterResponse resp;
  grpc::Status s = Load("dpo", "/adapters/dpo", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "worker group 2"
                                   ": fake worker refuses the load (unloaded again from the 2 of 2 groups that had "
                                   "loaded it)");
  for (auto& w : workers_) EXPECT_FALSE(w->HasAdapter("dpo"));
  EXPECT_EQ(Chat("dpo").error_code(), grpc::StatusCode::NOT_FOUND);
  // A missing folder: the worker's NOT_FOUND naming it, nothing left loaded.
  workers_[1]->refuse_load_code = grpc::StatusCode::OK;
  s = Load("dpo", "relative/dir", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("no folder relative/dir"), std::string::npos) << s.error_message();
  for (auto& w : workers_) EXPECT_FALSE(w->HasAdapter("dpo"));
}

TEST_F(LoraRoutingTest, BadNamesAndPathsAreRefusedNamingTheField) {
  Start(1);
  phi::v1::LoadLoraAdapterResponse resp;
  grpc::Status s = Load("", "/a", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().substr(0, 10), "lora_name:");
  s = Load("a b", "/a", &resp);
  EXPECT_EQ(s.error_message(), "lora_name: 'a b' has ' ' at byte 1, must be 1 to 128 bytes of [A-Za-z0-9._-]");
  s = Load(std::string(129, 'a'), "/a", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = Load("ok", "", &resp);
  EXPECT_EQ(s.error_message().substr(0, 10), "lora_path:");
  s = Load("ok", std::string(4097, '/'), &resp);
  EXPECT_EQ(s.error_message(), "lora_path: 4097 bytes, at most 4096");
  EXPECT_EQ(workers_[0]->loads.load(), 0);
}

TEST_F(LoraRoutingTest, LoadAndUnloadNeedAKey) {
  Start(1, {}, "k1");
  phi::v1::LoadLoraAdapterResponse resp;
  EXPECT_EQ(Load("dpo", "/adapters/dpo", &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Load("dpo", "/adapters/dpo", &resp, "wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(workers_[0]->loads.load(), 0);
  EXPECT_TRUE(Load("dpo", "/adapters/dpo", &resp, "k1").ok());
  EXPECT_EQ(Unload("dpo").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(workers_[0]->HasAdapter("dpo"));
}

TEST_F(LoraRoutingTest, AGroupThatLosesAnAdapterGetsItBack) {
  Start(2);
  phi::v1::LoadLoraAdapterResponse resp;
  ASSERT_TRUE(Load("dpo", "/adapters/dpo", &resp).ok());
  // Group 1 restarts without it: the next health rounds load it again.
  {
    std::lock_guard<std::mutex> l(workers_[1]->mu);
    workers_[1]->adapters.clear();
  }
  EXPECT_TRUE(Eventually([&] { return workers_[1]->HasAdapter("dpo"); }));
  // (A round that read the status before that load may ask again: ALREADY_EXISTS, harmless.)
  EXPECT_GE(workers_[1]->loads.load(), 2);
  // Unloaded: no longer reconciled.
  ASSERT_TRUE(Unload("dpo").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // several health rounds (50 ms)
  EXPECT_FALSE(workers_[0]->HasAdapter("dpo") || workers_[1]->HasAdapter("dpo"));
}

TEST_F(LoraRoutingTest, MetricsCarryTheServedModelOnly) {
  Start(1);
  workers_[0]->AddAdapter("a1");
  pool_->RefreshNow();
  ASSERT_TRUE(Chat("a1").ok());
  ASSERT_TRUE(Chat("").ok());
  EXPECT_EQ(Chat("secret-unknown-name").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Metric("phi_gateway_requests_total{route=\"chat\",code=\"OK\",model=\"a1\"}"), 1);
  EXPECT_EQ(Metric("phi_gateway_requests_total{route=\"chat\",code=\"OK\",model=\"fake-model\"}"), 1);
  // No served model: no model label.
  EXPECT_EQ(Metric("phi_gateway_requests_total{route=\"chat\",code=\"NOT_FOUND\"}"), 1);
  EXPECT_EQ(Metric("phi_gateway_time_to_first_token_seconds_count{model=\"a1\"}"), 1);
  EXPECT_GT(Metric("phi_gateway_completion_tokens_total{model=\"a1\"}"), 0);
  EXPECT_EQ(registry_.Serialize().find("secret-unknown-name"), std::string::npos);
}

}  // namespace
}  // namespace phi::gateway::testing
