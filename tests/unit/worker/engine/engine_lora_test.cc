// LoRA adapters in the engine, against the fake runner (fake_model_runner.h): a sequence's KV
// cells and logits depend on the adapter installed in its slot, so an output equal to the
// reference loop under its own adapter proves the slot was right, the adapter was installed
// before the step and never replaced under it, and no KV block came from another adapter.
#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "services/worker/engine/engine.h"
#include "services/worker/lora/lora_adapter.h"
#include "tests/unit/worker/engine/engine_test_util.h"
#include "tests/unit/worker/engine/fake_model_runner.h"

namespace phi::worker {
namespace {

using testing::Completion;
using testing::FakeModelRunner;

std::shared_ptr<const lora::LoraAdapter> Adapter(const std::string& name, const std::string& path = "") {
  auto a = std::make_shared<lora::LoraAdapter>();
  a->name = name;
  a->path = path.empty() ? "/adapters/" + name : path;
  a->rank = 8;
  a->base_model = "microsoft/phi-1_5";
  a->layers.resize(1);
  lora::LoraWeights w;
  w.rank = 8;
  a->layers[0][static_cast<size_t>(lora::LoraModule::kQ)] = w;
  a->layers[0][static_cast<size_t>(lora::LoraModule::kFc2)] = w;
  return a;
}

GenerationRequest Greedy(std::vector<int32_t> prompt, int32_t max_new, const std::string& adapter = "") {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.stopping.max_new_tokens = max_new;
  r.stopping.ignore_eos = true;
  r.adapter = adapter;
  return r;
}

// What a request must produce under `adapter` (null: the base model), token by token.
std::vector<int32_t> Reference(const FakeModelRunner& runner, const GenerationRequest& r,
                               const lora::LoraAdapter* adapter) {
  std::vector<int32_t> history = r.prompt, out;
  SamplingOptions o = r.sampling;
  o.seed = r.seed.value_or(0);
  for (int32_t step = 0; step < r.stopping.max_new_tokens; ++step) {
    const std::vector<float> l = runner.LogitsAfter(history, adapter);
    const int32_t t = SampleToken(l, runner.shape().vocab_size, o, step, nullptr, false, 0).token_id;
    out.push_back(t);
    history.push_back(t);
  }
  return out;
}

struct Harness {
  explicit Harness(int32_t slots, EngineOptions o = {}) {
    runner.set_adapter_slots(slots);
    o.registry = &registry;
    engine = std::move(Engine::Create(&runner, o)).value();
  }
  // Registers adapters and keeps them for references.
  void Add(const std::vector<std::string>& names) {
    for (const std::string& n : names) {
      adapters[n] = Adapter(n);
      ASSERT_TRUE(engine->AddAdapter(adapters[n]).ok()) << n;
    }
  }
  // Runs `r` alone and checks it against the reference under its adapter.
  Completion RunChecked(const GenerationRequest& r) {
    auto c = testing::RunOne(*engine, r);
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return {};
    EXPECT_TRUE(c->last.status.ok()) << c->last.status;
    EXPECT_EQ(c->tokens, Reference(runner, r, r.adapter.empty() ? nullptr : adapters.at(r.adapter).get()))
        << "adapter '" << r.adapter << "'";
    return *c;
  }
  const AdapterInfo* Info(const std::string& name) {
    infos = engine->Adapters();
    for (const AdapterInfo& i : infos) {
      if (i.name == name) return &i;
    }
    return nullptr;
  }
  metrics::Registry registry;
  FakeModelRunner runner;
  std::unique_ptr<Engine> engine;
  std::map<std::string, std::shared_ptr<const lora::LoraAdapter>> adapters;
  std::vector<AdapterInfo> infos;
};

std::vector<int32_t> Prompt(int32_t length, int32_t salt) {
  std::vector<int32_t> p(length);
  for (int32_t i = 0; i < length; ++i) p[i] = (i * 13 + salt * 7) % 60;
  return p;
}

using Calls = std::vector<std::pair<int32_t, std::string>>;

TEST(EngineLoraTest, AdaptersResolveToSlotsAndDifferFromTheBase) {
  Harness h(2);
  h.Add({"dpo", "sft"});
  const std::vector<int32_t> p = Prompt(20, 1);
  const Completion base = h.RunChecked(Greedy(p, 12));
  const Completion dpo = h.RunChecked(Greedy(p, 12, "dpo"));
  const Completion sft = h.RunChecked(Greedy(p, 12, "sft"));
  EXPECT_NE(base.tokens, dpo.tokens);  // the adapter really changed the model
  EXPECT_NE(dpo.tokens, sft.tokens);
  EXPECT_EQ(h.runner.set_adapter_calls(), (Calls{{1, "dpo"}, {2, "sft"}}));
  h.RunChecked(Greedy(p, 4, "dpo"));  // resident: no new install
  EXPECT_EQ(h.runner.set_adapter_calls().size(), 2u);
  const AdapterInfo* info = h.Info("dpo");
  ASSERT_NE(info, nullptr);
  EXPECT_TRUE(info->resident);
  EXPECT_EQ(info->requests, 0);
  EXPECT_EQ(info->rank, 8);
  EXPECT_EQ(info->path, "/adapters/dpo");
  EXPECT_EQ(info->base_model, "microsoft/phi-1_5");
  EXPECT_EQ(info->target_modules, (std::vector<std::string>{"q_proj", "fc2"}));
  EXPECT_EQ(h.runner.set_adapter_calls_during_steps(), 0);
}

// 32 requests over three adapters and the base, arriving at random times: each equals its
// reference, and steps really mixed slots.
TEST(EngineLoraTest, OneBatchMixesAdaptersAndTheBase) {
  EngineOptions o;
  o.block_size = 8;
  o.max_batch_tokens = 64;
  Harness h(3, o);
  h.Add({"a", "b", "c"});
  h.runner.set_step_delay_us(300);
  const std::vector<std::string> choice = {"", "a", "b", "c"};
  std::mt19937_64 rng(3);
  std::vector<GenerationRequest> requests;
  std::vector<int> delays;
  for (int i = 0; i < 32; ++i) {
    GenerationRequest r = Greedy(testing::RandomPrompt(rng, 1, 40, 60), 4 + static_cast<int32_t>(rng() % 20),
                                 choice[i % 4]);
    if (i % 3 == 0) {
      r.sampling.temperature = 0.8f;
      r.seed = rng();
    }
    requests.push_back(r);
    delays.push_back(static_cast<int>(rng() % 10000));
  }
  const std::vector<Completion> together = testing::RunConcurrently(*h.engine, requests, delays);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i].last.status.ok()) << together[i].last.status;
    const auto& r = requests[i];
    EXPECT_EQ(together[i].tokens, Reference(h.runner, r, r.adapter.empty() ? nullptr : h.adapters.at(r.adapter).get()))
        << "request " << i << " adapter '" << r.adapter << "'";
  }
  size_t most_slots = 0;
  for (const std::vector<int32_t>& step : h.runner.step_slots()) {
    most_slots = std::max(most_slots, std::set<int32_t>(step.begin(), step.end()).size());
  }
  EXPECT_GE(most_slots, 3u) << "no step mixed adapters";
  EXPECT_EQ(h.runner.set_adapter_calls().size(), 3u);  // each installed once: three slots, three adapters
  EXPECT_EQ(h.runner.set_adapter_calls_during_steps(), 0);
}

// A cache too small for the batch: preempted requests keep their slot and recompute under
// their own adapter.
TEST(EngineLoraTest, PreemptedRequestsKeepTheirAdapter) {
  EngineOptions o;
  o.num_kv_blocks = 14;
  o.block_size = 8;
  o.max_batch_tokens = 48;
  Harness h(2, o);
  h.Add({"a", "b"});
  h.runner.set_step_delay_us(200);
  const std::vector<std::string> choice = {"a", "b", ""};
  std::mt19937_64 rng(11);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 12; ++i) {
    requests.push_back(Greedy(testing::RandomPrompt(rng, 8, 40, 60), 30, choice[i % 3]));
  }
  const std::vector<Completion> out = testing::RunConcurrently(*h.engine, requests, {});
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(out[i].last.status.ok()) << out[i].last.status;
    const auto& r = requests[i];
    EXPECT_EQ(out[i].tokens, Reference(h.runner, r, r.adapter.empty() ? nullptr : h.adapters.at(r.adapter).get()))
        << "request " << i;
  }
  EXPECT_NE(h.registry.Serialize().find("phi_worker_preemptions_total "), std::string::npos);
  EXPECT_EQ(h.registry.Serialize().find("phi_worker_preemptions_total 0\n"), std::string::npos) << "no preemption";
  EXPECT_EQ(h.runner.set_adapter_calls().size(), 2u);  // each installed once, whatever came first
  ASSERT_TRUE(testing::WaitIdle(*h.engine));
  EXPECT_EQ(h.Info("a")->requests, 0);
  EXPECT_EQ(h.Info("b")->requests, 0);
}

TEST(EngineLoraTest, LeastRecentlyUsedIdleAdapterIsEvicted) {
  Harness h(2);
  h.Add({"a", "b", "c"});
  const std::vector<int32_t> p = Prompt(10, 2);
  h.RunChecked(Greedy(p, 3, "a"));
  h.RunChecked(Greedy(p, 3, "b"));
  h.RunChecked(Greedy(p, 3, "a"));  // b is now the least recently used
  h.RunChecked(Greedy(p, 3, "c"));
  EXPECT_EQ(h.runner.set_adapter_calls(), (Calls{{1, "a"}, {2, "b"}, {2, "c"}}));
  EXPECT_FALSE(h.Info("b")->resident);
  EXPECT_TRUE(h.Info("a")->resident);
  h.RunChecked(Greedy(p, 3, "b"));  // evicts a (used before c)
  EXPECT_EQ(h.runner.set_adapter_calls().back(), (std::pair<int32_t, std::string>{1, "b"}));
  EXPECT_EQ(h.runner.adapter_in_slot(1), "b");
  EXPECT_EQ(h.runner.adapter_in_slot(2), "c");
}

TEST(EngineLoraTest, AllSlotsBusyIsResourceExhaustedUntilOneIsIdle) {
  Harness h(1);
  h.Add({"a", "b"});
  h.runner.set_step_delay_us(2000);
  const GenerationRequest long_a = Greedy(Prompt(10, 3), 400, "a");
  auto running = h.engine->Submit(long_a);
  ASSERT_TRUE(running.ok());
  auto refused = h.engine->Submit(Greedy(Prompt(10, 3), 5, "b"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("--max-loras 1"), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("(a)"), std::string::npos) << refused.status();
  // The same adapter shares its slot; the base needs none.
  EXPECT_EQ(h.Info("a")->requests, 1);
  auto also_a = h.engine->Submit(Greedy(Prompt(12, 3), 3, "a"));
  ASSERT_TRUE(also_a.ok()) << also_a.status();
  auto base = h.engine->Submit(Greedy(Prompt(12, 3), 3));
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_TRUE(testing::Drain(**also_a).last.status.ok());
  EXPECT_TRUE(testing::Drain(**base).last.status.ok());
  (*running)->Cancel();
  EXPECT_EQ(testing::Drain(**running).last.finish_reason, FinishReason::kCancelled);
  h.runner.set_step_delay_us(0);
  ASSERT_TRUE(testing::WaitIdle(*h.engine));
  h.RunChecked(Greedy(Prompt(10, 3), 5, "b"));  // a is idle now: evicted
  EXPECT_EQ(h.runner.set_adapter_calls(), (Calls{{1, "a"}, {1, "b"}}));
}

// A request refused after taking its slot (here: the queue is full) gives it back.
TEST(EngineLoraTest, RefusedRequestGivesItsSlotBack) {
  EngineOptions o;
  o.max_waiting = 0;
  Harness h(1, o);
  h.Add({"a"});
  auto refused = h.engine->Submit(Greedy(Prompt(8, 1), 2, "a"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("queue is full"), std::string::npos) << refused.status();
  EXPECT_EQ(h.Info("a")->requests, 0);
  EXPECT_NE(h.registry.Serialize().find("phi_worker_lora_slots_busy 0\n"), std::string::npos);
  h.engine->StopAdmitting();
  EXPECT_EQ(h.engine->Submit(Greedy(Prompt(8, 1), 2, "a")).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(h.Info("a")->requests, 0);
}

TEST(EngineLoraTest, RemovedAdapterFinishesItsRequestsThenFreesItsSlot) {
  Harness h(2);
  h.Add({"a"});
  h.runner.set_step_delay_us(1000);
  const GenerationRequest r = Greedy(Prompt(20, 4), 150, "a");
  auto stream = h.engine->Submit(r);
  ASSERT_TRUE(stream.ok());
  OutputChunk first;
  ASSERT_TRUE((*stream)->Next(&first, absl::Seconds(10)));  // it is running
  ASSERT_TRUE(h.engine->RemoveAdapter("a").ok());
  EXPECT_TRUE(h.engine->Adapters().empty());
  auto later = h.engine->Submit(Greedy(Prompt(20, 4), 5, "a"));
  EXPECT_EQ(later.status().code(), absl::StatusCode::kNotFound);
  // While it runs the name cannot come back (its KV blocks are cached under the name).
  EXPECT_EQ(h.engine->AddAdapter(Adapter("a", "/elsewhere")).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(h.engine->RemoveAdapter("a").code(), absl::StatusCode::kNotFound);
  Completion rest = testing::Drain(**stream);
  ASSERT_TRUE(rest.last.status.ok()) << rest.last.status;
  std::vector<int32_t> tokens = first.token_ids;
  tokens.insert(tokens.end(), rest.tokens.begin(), rest.tokens.end());
  EXPECT_EQ(tokens, Reference(h.runner, r, h.adapters.at("a").get()));
  ASSERT_TRUE(testing::WaitIdle(*h.engine));
  for (int i = 0; i < 200 && h.runner.set_adapter_calls().size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(h.runner.set_adapter_calls(), (Calls{{1, "a"}, {1, ""}}));
  EXPECT_EQ(h.runner.set_adapter_calls_during_steps(), 0);
}

// Reloading a name with other weights: the old adapter's cached KV is forgotten.
TEST(EngineLoraTest, ReloadedAdapterDoesNotReuseTheOldOnesBlocks) {
  Harness h(2);
  h.Add({"a"});
  const std::vector<int32_t> p = Prompt(50, 5);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4, "a")).last.cached_prompt_tokens, 0);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4, "a")).last.cached_prompt_tokens, 48);
  ASSERT_TRUE(h.engine->RemoveAdapter("a").ok());
  h.adapters["a"] = Adapter("a", "/adapters/a-v2");
  ASSERT_TRUE(h.engine->AddAdapter(h.adapters["a"]).ok());
  EXPECT_EQ(h.RunChecked(Greedy(p, 4, "a")).last.cached_prompt_tokens, 0);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4, "a")).last.cached_prompt_tokens, 48);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4)).last.cached_prompt_tokens, 0);  // nor the base's
}

TEST(EngineLoraTest, UnknownAdapterIsNotFoundNamingTheLoadedOnes) {
  Harness h(1);
  auto none = h.engine->Submit(Greedy(Prompt(5, 1), 2, "dpo"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("no LoRA adapter is loaded"), std::string::npos) << none.status();
  std::vector<std::string> names;
  for (int i = 0; i < 12; ++i) names.push_back("adapter-" + std::to_string(10 + i));
  h.Add(names);
  auto unknown = h.engine->Submit(Greedy(Prompt(5, 1), 2, "dpo"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("'dpo' is not loaded; loaded: adapter-10, adapter-11"),
            std::string::npos)
      << unknown.status();
  EXPECT_NE(unknown.status().message().find("and 4 more"), std::string::npos) << unknown.status();
  auto huge = h.engine->Submit(Greedy(Prompt(5, 1), 2, std::string(100000, 'x')));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kNotFound);
  EXPECT_LT(huge.status().message().size(), 500u);
  EXPECT_TRUE(testing::WaitIdle(*h.engine));
}

TEST(EngineLoraTest, AddAdapterRefusals) {
  {
    Harness none(0);
    EXPECT_EQ(none.engine->AddAdapter(Adapter("a")).code(), absl::StatusCode::kFailedPrecondition);
    auto r = none.engine->Submit(Greedy(Prompt(5, 1), 2, "a"));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
    EXPECT_NE(r.status().message().find("--max-loras 0"), std::string::npos) << r.status();
  }
  EngineOptions o;
  o.max_adapters = 2;
  Harness h(1, o);
  h.Add({"a", "b"});
  EXPECT_EQ(h.engine->AddAdapter(Adapter("a")).code(), absl::StatusCode::kAlreadyExists);
  const absl::Status third = h.engine->AddAdapter(Adapter("c"));
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.message().find("--max-lora-adapters (2)"), std::string::npos) << third;
  for (const std::string& bad : std::vector<std::string>{"", "has space", "slash/name", std::string(129, 'x')}) {
    EXPECT_EQ(h.engine->AddAdapter(Adapter(bad)).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(h.engine->AddAdapter(nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineLoraTest, FailedInstallEndsTheRequestWithItsStatusAndLeavesTheSlotEmpty) {
  Harness h(1);
  h.Add({"a", "b"});
  h.RunChecked(Greedy(Prompt(8, 1), 3, "b"));
  h.runner.FailSetAdapter("a", absl::ResourceExhaustedError("out of device memory"));
  auto r = testing::RunOne(*h.engine, Greedy(Prompt(8, 1), 3, "a"));
  ASSERT_TRUE(r.ok()) << r.status();  // decided on the engine thread: the stream's final chunk
  EXPECT_EQ(r->last.finish_reason, FinishReason::kError);
  EXPECT_EQ(r->last.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r->last.status.message().find("'a' could not be installed"), std::string::npos) << r->last.status;
  EXPECT_NE(r->last.status.message().find("out of device memory"), std::string::npos) << r->last.status;
  EXPECT_TRUE(r->tokens.empty());
  EXPECT_EQ(h.runner.adapter_in_slot(1), "");
  EXPECT_FALSE(h.Info("a")->resident);
  EXPECT_FALSE(h.Info("b")->resident);
  h.runner.FailSetAdapter("a", absl::OkStatus());
  h.RunChecked(Greedy(Prompt(8, 1), 3, "a"));
  h.RunChecked(Greedy(Prompt(8, 1), 3, "b"));
  EXPECT_EQ(h.runner.set_adapter_calls(), (Calls{{1, "b"}, {1, "a"}, {1, ""}, {1, "a"}, {1, "b"}}));
}

// The same prompt under two adapters and the base: never a cached token from another
// adapter, always from the same one; sent at once, none is held back for another's prefill.
TEST(EngineLoraTest, PrefixCacheIsNeverSharedAcrossAdapters) {
  Harness h(2);
  h.Add({"a", "b"});
  const std::vector<int32_t> p = Prompt(50, 6);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4)).last.cached_prompt_tokens, 0);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4, "a")).last.cached_prompt_tokens, 0);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4, "b")).last.cached_prompt_tokens, 0);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4, "a")).last.cached_prompt_tokens, 48);
  EXPECT_EQ(h.RunChecked(Greedy(p, 4)).last.cached_prompt_tokens, 48);

  const std::vector<int32_t> q = Prompt(70, 7);
  std::vector<GenerationRequest> twins = {Greedy(q, 6, "a"), Greedy(q, 6, "b"), Greedy(q, 6), Greedy(q, 6, "a")};
  const int64_t before = h.runner.tokens_computed();
  const std::vector<Completion> out = testing::RunConcurrently(*h.engine, twins, {});
  for (size_t i = 0; i < twins.size(); ++i) {
    ASSERT_TRUE(out[i].last.status.ok()) << out[i].last.status;
    EXPECT_EQ(out[i].tokens, Reference(h.runner, twins[i],
                                       twins[i].adapter.empty() ? nullptr : h.adapters.at(twins[i].adapter).get()))
        << i;
  }
  // Three prompts computed in full (a, b, base), a's twin only past the 64 cached tokens.
  EXPECT_EQ(out[0].last.cached_prompt_tokens + out[3].last.cached_prompt_tokens, 64);
  EXPECT_EQ(out[1].last.cached_prompt_tokens, 0);
  EXPECT_EQ(out[2].last.cached_prompt_tokens, 0);
  EXPECT_EQ(h.runner.tokens_computed() - before, 3 * 70 + (70 - 64) + 4 * 5);
}

TEST(EngineLoraTest, MetricsCarryTheAdapterLabel) {
  EngineOptions o;
  o.max_adapters = 1;  // adapter labels: at most 2 names, later ones share "(other)"
  Harness h(2, o);
  h.Add({"a"});
  h.RunChecked(Greedy(Prompt(8, 1), 3, "a"));
  h.RunChecked(Greedy(Prompt(8, 1), 2));
  std::string text = h.registry.Serialize();
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("phi_worker_requests_total{finish_reason=\"length\",adapter=\"a\"} 1")) << text;
  EXPECT_TRUE(has("phi_worker_requests_total{finish_reason=\"length\"} 1")) << text;
  EXPECT_TRUE(has("phi_worker_requests_total{finish_reason=\"cancelled\",adapter=\"a\"} 0")) << text;
  EXPECT_TRUE(has("phi_worker_generated_tokens_total{adapter=\"a\"} 3")) << text;
  EXPECT_TRUE(has("phi_worker_generated_tokens_total 2")) << text;
  EXPECT_TRUE(has("phi_worker_lora_slots_capacity 2")) << text;
  EXPECT_TRUE(has("phi_worker_lora_slots_busy 0")) << text;
  EXPECT_TRUE(has("phi_worker_lora_adapters_registered 1")) << text;
  EXPECT_TRUE(has("phi_worker_lora_slot_installs_total 1")) << text;
  for (const std::string& name : std::vector<std::string>{"b", "c"}) {
    ASSERT_TRUE(h.engine->RemoveAdapter(h.adapters.begin()->first).ok());
    h.adapters.clear();
    h.Add({name});
    h.RunChecked(Greedy(Prompt(8, 1), 1, name));
  }
  text = h.registry.Serialize();
  EXPECT_TRUE(has("phi_worker_generated_tokens_total{adapter=\"b\"} 1")) << text;
  EXPECT_TRUE(has("phi_worker_generated_tokens_total{adapter=\"(other)\"} 1")) << text;
  EXPECT_EQ(text.find("adapter=\"c\""), std::string::npos) << text;
}

}  // namespace
}  // namespace phi::worker
