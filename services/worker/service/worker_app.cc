#include "services/worker/service/worker_app.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "services/common/logging.h"
#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/engine/engine.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/service/worker_service.h"

namespace phi::worker {
namespace {

// Cap on the automatic block count: tiny models have tiny blocks, and a block table of
// millions of ids helps nobody.
constexpr int64_t kMaxAutoBlocks = 1 << 16;

absl::Status WarmUp(Engine& engine) {
  GenerationRequest r;
  r.request_id = "warmup";
  r.prompt = {0};
  r.stopping.max_new_tokens = 1;
  absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine.Submit(r);
  if (!stream.ok()) return stream.status();
  OutputChunk chunk;
  const absl::Time deadline = absl::Now() + absl::Minutes(10);
  while (absl::Now() < deadline) {
    if (!(*stream)->Next(&chunk, absl::Milliseconds(100))) continue;
    if (!chunk.finished) continue;
    if (chunk.finish_reason == FinishReason::kError) return chunk.status;
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError("warm-up forward pass took more than 10 minutes");
}

}  // namespace

void AddWorkerFlags(common::FlagSet& flags, WorkerConfig* c) {
  flags.AddString("model", "PHI_MODEL", &c->model_dir,
                  "model folder (config.json, generation_config.json, *.safetensors, tokenizer.json); required");
  flags.AddString("model-name", "PHI_MODEL_NAME", &c->model_name, "name reported by GetStatus (default: folder name)");
  flags.AddChoice("dtype", "PHI_DTYPE", &c->dtype, {"bf16", "f32"}, "weight format in memory");
  flags.AddInt("threads", "PHI_THREADS", &c->threads, 1, 1024, "CPU threads for the forward pass");
  flags.AddInt("kv-cache-blocks", "PHI_KV_CACHE_BLOCKS", &c->kv_cache_blocks, 0, 1 << 24,
               "KV cache blocks (0: as many as --kv-cache-mb holds)");
  flags.AddInt("kv-cache-mb", "PHI_KV_CACHE_MB", &c->kv_cache_mb, 1, 1 << 20,
               "KV cache memory when --kv-cache-blocks is 0, MiB");
  flags.AddInt("kv-block-size", "PHI_KV_BLOCK_SIZE", &c->kv_block_size, 1, 1024, "tokens per KV block");
  flags.AddInt("max-batch-tokens", "PHI_MAX_BATCH_TOKENS", &c->max_batch_tokens, 1, 1 << 20,
               "tokens per engine step (prefill chunks and decodes together)");
  flags.AddInt("max-running", "PHI_MAX_RUNNING", &c->max_running, 1, 1 << 16, "sequences per engine step");
  flags.AddInt("max-waiting", "PHI_MAX_WAITING", &c->max_waiting, 0, 1 << 20,
               "queued requests before Generate answers RESOURCE_EXHAUSTED");
  flags.AddBool("prefix-cache", "PHI_PREFIX_CACHE", &c->prefix_cache, "reuse cached KV blocks of shared prefixes");
  flags.AddInt("rank", "PHI_RANK", &c->rank, 0, 1023, "tensor-parallel rank of this process");
  flags.AddInt("world-size", "PHI_WORLD_SIZE", &c->world_size, 1, 1024, "tensor-parallel group size");
  flags.AddString("leader", "PHI_LEADER", &c->leader, "host:port of rank 0 (world size > 1)");
  c->server.port = 50053;
  c->server.metrics_port = 9092;
  c->server.service_name = "worker";
  c->server.start_serving = false;
  common::AddServerFlags(flags, &c->server);
}

absl::Status ValidateWorkerConfig(const WorkerConfig& c) {
  if (c.model_dir.empty()) return absl::InvalidArgumentError("--model: required (a model folder)");
  std::error_code ec;
  if (!std::filesystem::is_directory(c.model_dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("--model ", c.model_dir, ": no such directory"));
  }
  if (c.world_size != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--world-size ", c.world_size, ": tensor parallelism is not available in this build yet; use 1"));
  }
  if (c.rank >= c.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank ", c.rank, " is outside [0, ", c.world_size, ") for --world-size ", c.world_size));
  }
  if (c.world_size == 1 && !c.leader.empty()) {
    return absl::InvalidArgumentError("--leader is only for --world-size > 1");
  }
  return absl::OkStatus();
}

int RunWorker(const WorkerConfig& config) {
  std::string name = config.model_name;
  if (name.empty()) name = std::filesystem::path(config.model_dir).lexically_normal().filename().string();
  if (name.empty()) name = std::filesystem::path(config.model_dir).lexically_normal().parent_path().filename().string();
  WorkerServiceImpl service(name, static_cast<int32_t>(config.world_size));
  std::unique_ptr<common::ServiceServer> server = common::StartOrExit(config.server, {&service});

  const absl::Time t0 = absl::Now();
  cpu::CpuRunnerOptions runner_options;
  runner_options.weights = config.dtype == "f32" ? cpu::WeightFormat::kF32 : cpu::WeightFormat::kBF16;
  runner_options.num_threads = static_cast<int>(config.threads);
  absl::StatusOr<std::unique_ptr<cpu::CpuModelRunner>> runner = cpu::CpuModelRunner::Create(config.model_dir,
                                                                                         runner_options);
  if (!runner.ok()) {
    PHI_LOG(ERROR, "model_load_failed").Str("model", config.model_dir).Str("error", runner.status().ToString());
    std::fprintf(stderr, "phi-worker: %s\n", runner.status().ToString().c_str());
    return 1;
  }
  EngineOptions options;
  options.block_size = static_cast<int32_t>(config.kv_block_size);
  int64_t blocks = config.kv_cache_blocks;
  if (blocks == 0) {
    const int64_t block_bytes = std::max<int64_t>(1, (*runner)->KvBlockBytes(options.block_size));
    blocks = std::clamp<int64_t>(config.kv_cache_mb * (int64_t{1} << 20) / block_bytes, 1, kMaxAutoBlocks);
  }
  options.num_kv_blocks = static_cast<int32_t>(blocks);
  options.max_batch_tokens = static_cast<int32_t>(config.max_batch_tokens);
  options.max_running = static_cast<int32_t>(config.max_running);
  options.max_waiting = static_cast<int32_t>(config.max_waiting);
  options.enable_prefix_cache = config.prefix_cache;
  options.eos_token_ids = (*runner)->generation().eos_token_ids;
  common::ServiceServer* server_ptr = server.get();
  options.on_step_failure = [&service, server_ptr](const absl::Status& status) {
    PHI_LOG(ERROR, "not_serving").Str("reason", "forward pass failed").Str("error", status.ToString());
    service.SetReady(false);
    server_ptr->SetServing(false);
  };
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(runner->get(), options);
  if (!engine.ok()) {
    PHI_LOG(ERROR, "engine_start_failed").Str("error", engine.status().ToString());
    std::fprintf(stderr, "phi-worker: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  absl::Status warm = WarmUp(**engine);
  if (!warm.ok()) {
    PHI_LOG(ERROR, "warmup_failed").Str("error", warm.ToString());
    std::fprintf(stderr, "phi-worker: warm-up forward pass failed: %s\n", warm.ToString().c_str());
    return 1;
  }
  service.SetEngine(engine->get());
  service.SetReady(true);
  server->SetServing(true);
  PHI_LOG(INFO, "ready")
      .Str("model", config.model_dir)
      .Str("kernel", (*runner)->kernel_name())
      .Int("kv_blocks", options.num_kv_blocks)
      .Int("kv_block_size", options.block_size)
      .Int("max_context", (*runner)->shape().max_position_embeddings)
      .Num("load_seconds", absl::ToDoubleSeconds(absl::Now() - t0));

  const int code = common::ServeUntilSignal(*server, [&] {
    service.SetReady(false);
    (*engine)->StopAdmitting();
  });
  (*engine)->Shutdown();
  return code;
}

}  // namespace phi::worker
