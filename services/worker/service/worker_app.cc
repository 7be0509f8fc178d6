#include "services/worker/service/worker_app.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "services/common/logging.h"
#include "services/common/request_limits.h"
#include "services/common/status_macros.h"
#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/engine/engine.h"
#include "services/worker/lora/lora_adapter.h"
#include "services/worker/model/generation_config.h"
#include "services/worker/model/phi_config.h"
#include "services/worker/parallel/follower.h"
#include "services/worker/parallel/leader_runner.h"
#include "services/worker/parallel/worker_group.h"
#include "services/worker/service/proto_convert.h"
#include "services/worker/service/worker_service.h"
#ifdef PHI_WORKER_WITH_CUDA
#include "services/worker/backends/cuda/cuda_model_runner.h"
#endif
#ifdef PHI_WORKER_WITH_NCCL
#include "services/worker/parallel/nccl_communicator.h"
#endif

namespace phi::worker {
namespace {

// Cap on the automatic block count: tiny models have tiny blocks, and a block table of
// millions of ids helps nobody.
constexpr int64_t kMaxAutoBlocks = 1 << 16;

}  // namespace

void AddWorkerFlags(common::FlagSet& flags, WorkerConfig* c) {
  flags.AddString("model", "PHI_MODEL", &c->model_dir,
                  "model folder (config.json, generation_config.json, *.safetensors, tokenizer.json); required");
  flags.AddString("model-name", "PHI_MODEL_NAME", &c->model_name, "name reported by GetStatus (default: folder name)");
  flags.AddChoice("dtype", "PHI_DTYPE", &c->dtype, {"bf16", "f32"}, "weight format in memory");
  flags.AddChoice("quantization", "PHI_QUANTIZATION", &c->quantization, {"none", "int8"},
                  "--device cpu: int8 quantizes every linear layer at load (8-bit weights, a scale per output "
                  "feature and 1024 inputs; about half the bytes of bf16 per decode step)");
  flags.AddBool("quantize-lm-head", "PHI_QUANTIZE_LM_HEAD", &c->quantize_lm_head,
                "with --quantization int8: quantize lm_head too (false keeps it bf16)");
  flags.AddChoice("cpu-kernels", "PHI_CPU_KERNELS", &c->cpu_kernels,
                  {"auto", "avx512bf16", "avx512", "avx2", "portable"},
                  "--device cpu: instruction set of the kernels (auto: the best this CPU has; a set the CPU "
                  "lacks exits 1 naming it; avx512bf16: avx512 with BF16-weight GEMMs on vdpbf16ps, "
                  "activations rounded to BF16)");
  flags.AddChoice("device", "PHI_DEVICE", &c->device, {"cpu", "cuda"},
                  "forward pass on the CPU or on one CUDA GPU (BF16; needs a build with PHI_ENABLE_CUDA)");
  flags.AddDouble("gpu-memory-fraction", "PHI_GPU_MEMORY_FRACTION", &c->gpu_memory_fraction, 0.01, 1.0,
                  "--device cuda: share of the GPU memory free after the weights that the KV cache takes "
                  "when --kv-cache-blocks is 0");
  flags.AddInt("threads", "PHI_THREADS", &c->threads, 1, 1024, "CPU threads for the forward pass");
  flags.AddInt("kv-cache-blocks", "PHI_KV_CACHE_BLOCKS", &c->kv_cache_blocks, 0, 1 << 24,
               "KV cache blocks (0: as many as --kv-cache-mb holds)");
  flags.AddInt("kv-cache-mb", "PHI_KV_CACHE_MB", &c->kv_cache_mb, 1, 1 << 20,
               "KV cache memory when --kv-cache-blocks is 0, MiB");
  flags.AddInt("kv-block-size", "PHI_KV_BLOCK_SIZE", &c->kv_block_size, 1, 1024, "tokens per KV block");
  flags.AddChoice("kv-cache-dtype", "PHI_KV_CACHE_DTYPE", &c->kv_cache_dtype, {"bf16", "fp8"},
                  "--device cuda: KV cache elements; fp8 (E4M3, scale 1) halves the KV bytes, doubling the "
                  "blocks that fit and cutting each decode step's KV reads, within a few 1e-2 of bf16's logits");
  flags.AddInt("max-batch-tokens", "PHI_MAX_BATCH_TOKENS", &c->max_batch_tokens, 1, 1 << 20,
               "tokens per engine step (prefill chunks and decodes together)");
  flags.AddInt("max-running", "PHI_MAX_RUNNING", &c->max_running, 1, 1 << 16, "sequences per engine step");
  flags.AddInt("max-waiting", "PHI_MAX_WAITING", &c->max_waiting, 0, 1 << 20,
               "queued requests before Generate answers RESOURCE_EXHAUSTED");
  flags.AddBool("prefix-cache", "PHI_PREFIX_CACHE", &c->prefix_cache, "reuse cached KV blocks of shared prefixes");
  flags.AddInt("rank", "PHI_RANK", &c->rank, 0, 1023, "tensor-parallel rank of this process");
  flags.AddInt("world-size", "PHI_WORLD_SIZE", &c->world_size, 1, 1024, "tensor-parallel group size");
  flags.AddString("leader", "PHI_LEADER", &c->leader,
                  "host:port of rank 0's rendezvous (world size > 1; rank 0 listens on its port)");
  flags.AddString("tp-host", "PHI_TP_HOST", &c->tp_host,
                  "address the other ranks reach this one at (default: 127.0.0.1 for a loopback leader, "
                  "else this host's name)");
  flags.AddInt("tp-join-timeout-s", "PHI_TP_JOIN_TIMEOUT_S", &c->tp_join_timeout_s, 1, 3600,
               "seconds for every rank to arrive before the group's start fails naming the missing ranks");
  flags.AddInt("tp-timeout-ms", "PHI_TP_TIMEOUT_MS", &c->tp_timeout_ms, 100, 600000,
               "a rank silent this long is taken as dead: the group stops serving and exits non-zero");
  flags.AddInt("grammar-cache-entries", "PHI_GRAMMAR_CACHE_ENTRIES", &c->grammar_cache_entries, 1, 1 << 16,
               "compiled grammars (JSON schemas, regexes, EBNF, choices) kept for reuse, least recently used "
               "dropped first");
  flags.AddDouble("grammar-compile-timeout-seconds", "PHI_GRAMMAR_COMPILE_TIMEOUT_SECONDS",
                  &c->grammar_compile_timeout_seconds, 0.01, 600,
                  "a grammar that takes longer to compile is refused (INVALID_ARGUMENT) before any token");
  flags.AddInt("grammar-compile-threads", "PHI_GRAMMAR_COMPILE_THREADS", &c->grammar_compile_threads, 1, 64,
               "threads that compile grammars (a compile past its limit keeps its thread until it ends)");
  flags.AddStringList("lora", "PHI_LORAS", &c->loras,
                      "a LoRA adapter to serve from start, NAME=PATH (a PEFT folder: adapter_config.json, "
                      "adapter_model.safetensors); requests select it by NAME. Repeatable; the environment "
                      "variable takes a comma-separated list. A bad one exits 2 naming it");
  flags.AddInt("max-loras", "PHI_MAX_LORAS", &c->max_loras, 0, 64,
               "LoRA adapter slots: adapters in use at once (idle ones are evicted, least recently used first); "
               "0 serves no adapters");
  flags.AddInt("max-lora-rank", "PHI_MAX_LORA_RANK", &c->max_lora_rank, 1, 256,
               "largest LoRA rank accepted (a higher one is refused with INVALID_ARGUMENT)");
  flags.AddInt("max-lora-adapters", "PHI_MAX_LORA_ADAPTERS", &c->max_lora_adapters, 1, 4096,
               "LoRA adapters registered at once (--lora and LoadAdapter); more: RESOURCE_EXHAUSTED");
  c->server.port = 50053;
  c->server.metrics_port = 9092;
  c->server.service_name = "worker";
  c->server.start_serving = false;
  common::AddServerFlags(flags, &c->server);
}

std::string ServedModelName(const WorkerConfig& config) {
  std::string name = config.model_name;
  if (name.empty()) name = std::filesystem::path(config.model_dir).lexically_normal().filename().string();
  if (name.empty()) name = std::filesystem::path(config.model_dir).lexically_normal().parent_path().filename().string();
  return name;
}

absl::StatusOr<std::vector<LoraFlag>> ParseLoraFlags(const std::vector<std::string>& loras,
                                                     const std::string& model_name) {
  std::vector<LoraFlag> out;
  for (const std::string& text : loras) {
    const size_t eq = text.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--lora ", text, ": expected NAME=PATH"));
    }
    LoraFlag f{text.substr(0, eq), text.substr(eq + 1)};
    if (absl::Status st = CheckAdapterName(f.name, "NAME", /*may_be_empty=*/false); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--lora ", text, ": ", st.message()));
    }
    if (f.name == model_name) {
      return absl::InvalidArgumentError(absl::StrCat("--lora ", text, ": NAME '", f.name, "' is the base model's name"));
    }
    if (f.path.empty() || f.path.size() > WorkerServiceImpl::kMaxAdapterPathBytes) {
      return absl::InvalidArgumentError(absl::StrCat("--lora ", text, ": PATH must be 1 to ",
                                                     WorkerServiceImpl::kMaxAdapterPathBytes, " bytes"));
    }
    for (const LoraFlag& seen : out) {
      if (seen.name == f.name) return absl::InvalidArgumentError(absl::StrCat("--lora ", text, ": NAME '", f.name, "' given twice"));
    }
    out.push_back(std::move(f));
  }
  return out;
}

absl::Status ValidateWorkerConfig(const WorkerConfig& c) {
  if (c.model_dir.empty()) return absl::InvalidArgumentError("--model: required (a model folder)");
  std::error_code ec;
  if (!std::filesystem::is_directory(c.model_dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("--model ", c.model_dir, ": no such directory"));
  }
  PHI_ASSIGN_OR_RETURN(const std::vector<LoraFlag> loras, ParseLoraFlags(c.loras, ServedModelName(c)));
  if (!loras.empty() && c.max_loras == 0) {
    return absl::InvalidArgumentError("--lora with --max-loras 0: a worker without adapter slots serves no adapters");
  }
  if (static_cast<int64_t>(loras.size()) > c.max_lora_adapters) {
    return absl::InvalidArgumentError(absl::StrCat("--lora given ", loras.size(), " times, more than --max-lora-adapters ",
                                                   c.max_lora_adapters));
  }
  if (c.world_size > 1) {
    if (c.leader.empty()) return absl::InvalidArgumentError("--leader: required (host:port) for --world-size > 1");
    PHI_RETURN_IF_ERROR(parallel::ValidateLeaderAddress(c.leader));
  }
  if (c.rank >= c.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank ", c.rank, " is outside [0, ", c.world_size, ") for --world-size ", c.world_size));
  }
  if (c.world_size == 1 && !c.leader.empty()) {
    return absl::InvalidArgumentError("--leader is only for --world-size > 1");
  }
  if (c.device == "cuda") {
#ifndef PHI_WORKER_WITH_CUDA
    return absl::InvalidArgumentError("--device cuda: this phi-worker was built without CUDA (configure with -DPHI_ENABLE_CUDA=ON)");
#endif
#ifndef PHI_WORKER_WITH_NCCL
    if (c.world_size > 1) {
      return absl::InvalidArgumentError(
          "--device cuda --world-size > 1: this phi-worker was built without NCCL (nccl.h / libnccl not found)");
    }
#endif
    if (c.dtype != "bf16") return absl::InvalidArgumentError("--device cuda: --dtype must be bf16");
    if (c.quantization != "none") {
      return absl::InvalidArgumentError(absl::StrCat("--quantization ", c.quantization,
                                                     ": only --device cpu quantizes weights (the CUDA backend is bf16)"));
    }
    if (c.cpu_kernels != "auto") {
      return absl::InvalidArgumentError(absl::StrCat("--cpu-kernels ", c.cpu_kernels, ": only for --device cpu"));
    }
  }
  if (c.quantization == "int8" && c.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--quantization int8 with --dtype ", c.dtype,
                                                   ": int8 replaces the weight format; leave --dtype at bf16"));
  }
  if (c.kv_cache_dtype != "bf16" && c.device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-dtype ", c.kv_cache_dtype, ": only --device cuda has an FP8 KV cache (the ", c.device,
        " backend keeps its KV cache in F32); use --kv-cache-dtype bf16 (the default) or --device cuda"));
  }
  return absl::OkStatus();
}

namespace {

parallel::GroupOptions GroupOptionsFrom(const WorkerConfig& c) {
  parallel::GroupOptions g;
  g.rank = static_cast<int>(c.rank);
  g.world_size = static_cast<int>(c.world_size);
  g.leader = c.leader;
  g.hostname = c.tp_host;
  if (g.hostname.empty()) {
    const std::string host = c.leader.substr(0, c.leader.rfind(':'));
    char name[256] = {};
    g.hostname = (host == "127.0.0.1" || host == "localhost" || gethostname(name, sizeof(name) - 1) != 0)
                     ? "127.0.0.1"
                     : name;
  }
  g.join_timeout = std::chrono::seconds(c.tp_join_timeout_s);
  g.op_timeout = std::chrono::milliseconds(c.tp_timeout_ms);
  return g;
}

// Ranks 1..N-1: replay the leader's steps until it shuts the group down (exit 0) or the
// group breaks (exit 1). SIGTERM stops the loop at the next message (heartbeats come
// every 500 ms).
int RunFollowerRank(common::ServiceServer& server, parallel::WorkerGroup& group, ModelRunner& runner,
                    parallel::AdapterLoader load_adapter) {
  server.SetServing(true);  // health: this rank is up; it serves no generation
  PHI_LOG(INFO, "follower_ready").Int("rank", group.rank()).Int("world_size", group.world_size());
  std::atomic<bool> stop{false};
  std::thread signals([&] { common::ServeUntilSignal(server, [&] { stop = true; }); });
  parallel::FollowerStats stats;
  absl::Status st = parallel::RunFollower(&runner, &group.host(), &stats, &stop, std::move(load_adapter));
  if (!stop.load()) kill(getpid(), SIGTERM);  // wake the signal thread
  signals.join();
  if (st.ok() || absl::IsCancelled(st)) {
    PHI_LOG(INFO, "follower_done").Int("steps", static_cast<int64_t>(stats.steps.load()));
    return 0;
  }
  PHI_LOG(ERROR, "group_failed").Str("error", st.ToString()).Int("rank", group.rank());
  std::fprintf(stderr, "phi-worker: rank %d: %s\n", group.rank(), st.ToString().c_str());
  return 1;
}

// What the engine needs from a loaded runner, whichever device it is on.
struct LoadedRunner {
  ModelRunner* runner = nullptr;
  int32_t num_kv_blocks = 0;
  std::vector<int32_t> eos_token_ids;
  model::GenerationDefaults generation;  // generation_config.json's sampling defaults
  std::string kernel;
  std::string isa = "none";      // the CPU kernels' instruction set; "none" on a GPU
  std::string weights = "bf16";  // weight format of the linear layers
  int32_t max_context = 0;
};

// The grammar compiler for sampling.constraint, over the model folder's tokenizer.json. Null
// (constrained requests then answer FAILED_PRECONDITION) when that file cannot be read: the
// worker still serves everything else.
std::unique_ptr<ConstraintCompiler> MakeConstraintCompiler(const WorkerConfig& config, const LoadedRunner& r) {
  ConstraintCompilerOptions o;
  o.tokenizer_json_path = (std::filesystem::path(config.model_dir) / "tokenizer.json").string();
  o.vocab_size = r.runner->shape().vocab_size;
  o.eos_token_ids = r.eos_token_ids;
  o.max_cache_entries = static_cast<size_t>(config.grammar_cache_entries);
  o.compile_timeout_seconds = config.grammar_compile_timeout_seconds;
  o.compile_threads = static_cast<int32_t>(config.grammar_compile_threads);
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<ConstraintCompiler>> compiler = ConstraintCompiler::Create(std::move(o));
  if (!compiler.ok()) {
    PHI_LOG(WARNING, "constrained_decoding_off").Str("error", compiler.status().ToString());
    return nullptr;
  }
  PHI_LOG(INFO, "grammar_compiler_ready").Num("seconds", absl::ToDoubleSeconds(absl::Now() - t0));
  return *std::move(compiler);
}

// --lora: each adapter read, registered and run once (a one-token request through it, so that
// every rank of a group reads and installs it now rather than at its first request). Returns
// 0, or 2 after printing the flag and the problem.
int LoadStartAdapters(const WorkerConfig& config, WorkerServiceImpl& service, Engine& engine) {
  absl::StatusOr<std::vector<LoraFlag>> loras = ParseLoraFlags(config.loras, ServedModelName(config));
  absl::Status st = loras.status();
  std::string flag;
  for (size_t i = 0; st.ok() && i < loras->size(); ++i) {
    const LoraFlag& f = (*loras)[i];
    flag = absl::StrCat("--lora ", f.name, "=", f.path);
    st = service.CheckLoadAdapter(f.name, f.path);
    if (st.ok()) st = service.LoadAndAddAdapter(&engine, f.name, f.path, /*probe=*/true).status();
  }
  if (st.ok()) return 0;
  PHI_LOG(ERROR, "lora_flag_refused").Str("flag", flag).Str("error", st.ToString());
  std::fprintf(stderr, "phi-worker: %s: %s\n", flag.c_str(), st.ToString().c_str());
  return 2;
}

// The engine over `r`, warm-up, READY, serving until a signal. Returns the exit code.
int ServeEngine(const WorkerConfig& config, const LoadedRunner& r, WorkerServiceImpl& service,
                common::ServiceServer& server, absl::Time t0) {
  EngineOptions options;
  options.block_size = static_cast<int32_t>(config.kv_block_size);
  options.num_kv_blocks = r.num_kv_blocks;
  options.max_batch_tokens = static_cast<int32_t>(config.max_batch_tokens);
  options.max_running = static_cast<int32_t>(config.max_running);
  options.max_waiting = static_cast<int32_t>(config.max_waiting);
  options.enable_prefix_cache = config.prefix_cache;
  options.eos_token_ids = r.eos_token_ids;
  options.default_max_new_tokens = r.generation.max_new_tokens;
  options.max_adapters = static_cast<int32_t>(config.max_lora_adapters);
  common::ServiceServer* server_ptr = &server;
  options.on_step_failure = [&service, server_ptr](const absl::Status& status) {
    PHI_LOG(ERROR, "not_serving").Str("reason", "forward pass failed").Str("error", status.ToString());
    service.SetReady(false);
    server_ptr->SetServing(false);
  };
  // Before the engine, so destroyed after it: its sequences hold the compiler's matchers.
  std::unique_ptr<ConstraintCompiler> compiler = MakeConstraintCompiler(config, r);
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(r.runner, options);
  if (!engine.ok()) {
    PHI_LOG(ERROR, "engine_start_failed").Str("error", engine.status().ToString());
    std::fprintf(stderr, "phi-worker: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  absl::Status warm = RunOneTokenRequest(**engine, "");
  if (!warm.ok()) {
    PHI_LOG(ERROR, "warmup_failed").Str("error", warm.ToString());
    std::fprintf(stderr, "phi-worker: warm-up forward pass failed: %s\n", warm.ToString().c_str());
    return 1;
  }
  if (const int code = LoadStartAdapters(config, service, **engine); code != 0) {
    (*engine)->Shutdown();
    return code;
  }
  service.SetGenerationDefaults(r.generation);
  service.SetConstraintCompiler(compiler.get());
  service.SetEngine(engine->get());
  service.SetReady(true);
  server.SetServing(true);
  PHI_LOG(INFO, "ready")
      .Str("model", config.model_dir)
      .Str("device", config.device)
      .Str("kernel", r.kernel)
      .Int("kv_blocks", options.num_kv_blocks)
      .Int("kv_block_size", options.block_size)
      .Str("kv_cache_dtype", config.kv_cache_dtype)
      .Int("max_context", r.max_context)
      .Int("lora_slots", r.runner->max_adapter_slots())
      .Int("loras", static_cast<int64_t>(config.loras.size()))
      .Num("default_temperature", r.generation.temperature)
      .Int("default_max_new_tokens", r.generation.max_new_tokens)
      .Num("load_seconds", absl::ToDoubleSeconds(absl::Now() - t0));

  const int code = common::ServeUntilSignal(server, [&] {
    service.SetReady(false);
    (*engine)->StopAdmitting();
  });
  (*engine)->Shutdown();
  return code;
}

// The model on this rank: its runner (the shard of the group's model) and what the engine
// needs from it. Errors name the model folder's problem or the device's.
struct LoadedShard {
  std::unique_ptr<ModelRunner> runner;
  LoadedRunner info;  // info.runner is set by the caller (LeaderRunner over the shard)
};

absl::Status LoadCpuShard(const WorkerConfig& config, parallel::WorkerGroup& group, LoadedShard* out) {
  cpu::CpuRunnerOptions runner_options;
  runner_options.comm = &group.host();
  runner_options.weights = config.quantization == "int8" ? cpu::WeightFormat::kInt8
                           : config.dtype == "f32"         ? cpu::WeightFormat::kF32
                                                           : cpu::WeightFormat::kBF16;
  runner_options.quantize_lm_head = config.quantize_lm_head;
  if (!cpu::ParseKernelPath(config.cpu_kernels, &runner_options.kernel)) {
    return absl::InvalidArgumentError(absl::StrCat("--cpu-kernels ", config.cpu_kernels,
                                                   ": expected one of auto, avx512bf16, avx512, avx2, portable"));
  }
  runner_options.num_threads = static_cast<int>(config.threads);
  runner_options.max_adapter_slots = static_cast<int32_t>(config.max_loras);
  PHI_ASSIGN_OR_RETURN(std::unique_ptr<cpu::CpuModelRunner> runner,
                       cpu::CpuModelRunner::Create(config.model_dir, runner_options));
  int64_t blocks = config.kv_cache_blocks;
  if (blocks == 0) {
    const int64_t block_bytes = std::max<int64_t>(1, runner->KvBlockBytes(static_cast<int32_t>(config.kv_block_size)));
    blocks = std::clamp<int64_t>(config.kv_cache_mb * (int64_t{1} << 20) / block_bytes, 1, kMaxAutoBlocks);
  }
  out->info.num_kv_blocks = static_cast<int32_t>(blocks);
  out->info.eos_token_ids = runner->generation().eos_token_ids;
  out->info.generation = model::DefaultsOf(runner->generation());
  out->info.kernel = runner->kernel_name();
  out->info.isa = std::string(cpu::IsaName(runner->isa()));
  out->info.weights = std::string(cpu::WeightFormatName(runner_options.weights));
  PHI_LOG(INFO, "cpu_kernels")
      .Str("isa", out->info.isa)
      .Str("best_isa_of_this_cpu", std::string(cpu::IsaName(cpu::BestIsa())))
      .Str("kernel", out->info.kernel)
      .Int("weight_bytes", runner->weight_memory_bytes())
      .Int("weight_bytes_per_decode_step", runner->weight_bytes_per_step());
  out->info.max_context = runner->shape().max_position_embeddings;
  out->runner = std::move(runner);
  return absl::OkStatus();
}

#ifdef PHI_WORKER_WITH_CUDA
// --device cuda: this rank's shard on one GPU (--world-size N: heads, fc1 columns and
// vocabulary split N ways, one NCCL all-reduce per layer; the NCCL unique id goes through
// the group's rendezvous store).
absl::Status LoadCudaShard(const WorkerConfig& config, parallel::WorkerGroup& group, LoadedShard* out) {
  cuda::CudaRunnerOptions o;
  o.device = -1;  // rank modulo the visible GPUs: one GPU per rank (a pod sees just its own)
  o.kv_memory_fraction = config.gpu_memory_fraction;
  o.model.block_size = static_cast<int>(config.kv_block_size);
  if (!cuda::ParseKvCacheDtype(config.kv_cache_dtype, &o.model.kv_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache-dtype ", config.kv_cache_dtype, ": expected one of: bf16, fp8"));
  }
  o.model.max_tokens_per_step = static_cast<int>(config.max_batch_tokens);
  o.model.max_seqs = static_cast<int>(std::min(config.max_running, config.max_batch_tokens));
  // Prompt logprobs can ask for every row of a prefill chunk.
  o.model.max_logit_rows = static_cast<int>(config.max_batch_tokens);
  o.model.max_adapter_slots = static_cast<int>(config.max_loras);
  o.model.max_adapter_rank = static_cast<int>(config.max_lora_rank);
  o.rank = group.rank();
  o.world_size = group.world_size();
#ifdef PHI_WORKER_WITH_NCCL
  if (group.world_size() > 1) {
    parallel::WorkerGroup* g = &group;
    const std::chrono::milliseconds timeout(config.tp_timeout_ms);
    o.make_comm = [g, timeout](int device, cudaStream_t stream) -> absl::StatusOr<cuda::CudaRunnerOptions::Comm> {
      parallel::NcclOptions n;
      n.device = device;
      n.stream = stream;
      n.timeout = timeout;
      // The collectives only enqueue behind the step's kernels; the step waits once, bounded.
      n.wait_each_operation = false;
      PHI_ASSIGN_OR_RETURN(std::unique_ptr<parallel::NcclCommunicator> comm,
                           parallel::NcclCommunicator::Create(&g->store(), g->rank(), g->world_size(), n));
      parallel::NcclCommunicator* raw = comm.get();
      return cuda::CudaRunnerOptions::Comm{std::move(comm), [raw] { return raw->Synchronize(); }};
    };
  }
#endif
  PHI_ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaModelRunner> runner,
                       cuda::CudaModelRunner::Create(config.model_dir, o));
  int64_t blocks = config.kv_cache_blocks;
  if (blocks == 0) {
    // KV cache from the GPU memory left after weights and step buffers; a model that does
    // not fit one full-length sequence is refused with the numbers. Every rank allocates
    // what the leader's engine asks for (LeaderRunner replays AllocateKvCache), so the group
    // takes the smallest count any rank can hold (gathered on the host channel).
    PHI_ASSIGN_OR_RETURN(int32_t mine, runner->KvBlocksThatFit(static_cast<int32_t>(config.kv_block_size)));
    if (group.world_size() > 1) {
      std::vector<int32_t> all(static_cast<size_t>(group.world_size()));
      if (absl::Status st = group.host().AllGather(&mine, all.data(), sizeof(int32_t)); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat("gathering the ranks' KV block counts: ", st.message()));
      }
      mine = *std::min_element(all.begin(), all.end());
    }
    blocks = mine;
  }
  out->info.num_kv_blocks = static_cast<int32_t>(blocks);
  out->info.eos_token_ids = runner->generation().eos_token_ids;
  out->info.generation = model::DefaultsOf(runner->generation());
  out->info.kernel = group.world_size() > 1 ? "cuda+nccl" : "cuda";
  out->info.max_context = runner->shape().max_position_embeddings;
  out->runner = std::move(runner);
  return absl::OkStatus();
}
#endif

}  // namespace

int RunWorker(const WorkerConfig& config) {
  WorkerServiceImpl service(ServedModelName(config), static_cast<int32_t>(config.world_size));
  common::ServerOptions server_options = config.server;
  // gRPC refuses a GenerateRequest longer than the model's context allows before it is parsed.
  if (server_options.max_receive_message_bytes == 0) {
    absl::StatusOr<model::PhiConfig> phi = model::LoadPhiConfig(config.model_dir);
    if (phi.ok()) server_options.max_receive_message_bytes = common::MaxGenerateRequestBytes(phi->max_position_embeddings);
  }
  std::unique_ptr<common::ServiceServer> server = common::StartOrExit(server_options, {&service});

  const absl::Time t0 = absl::Now();
#ifdef PHI_WORKER_WITH_CUDA
  // A rank without a GPU fails now, not after the group has waited for it.
  if (config.device == "cuda") {
    if (absl::StatusOr<int> gpus = cuda::CudaModelRunner::VisibleGpus(); !gpus.ok()) {
      PHI_LOG(ERROR, "model_load_failed").Str("model", config.model_dir).Str("error", gpus.status().ToString());
      std::fprintf(stderr, "phi-worker: %s\n", gpus.status().ToString().c_str());
      return 1;
    }
  }
#endif
  absl::StatusOr<std::unique_ptr<parallel::WorkerGroup>> group = parallel::WorkerGroup::Join(GroupOptionsFrom(config));
  if (!group.ok()) {
    PHI_LOG(ERROR, "group_start_failed").Str("error", group.status().ToString());
    std::fprintf(stderr, "phi-worker: %s\n", group.status().ToString().c_str());
    return 1;
  }
  LoadedShard shard;
  absl::Status loaded = absl::InvalidArgumentError("--device " + config.device + ": not built in");
  if (config.device == "cpu") loaded = LoadCpuShard(config, **group, &shard);
#ifdef PHI_WORKER_WITH_CUDA
  if (config.device == "cuda") loaded = LoadCudaShard(config, **group, &shard);
#endif
  if (!loaded.ok()) {
    PHI_LOG(ERROR, "model_load_failed").Str("model", config.model_dir).Str("error", loaded.ToString());
    std::fprintf(stderr, "phi-worker: %s\n", loaded.ToString().c_str());
    return 1;
  }
  metrics::DefaultRegistry()
      .AddGauge("phi_worker_backend_info",
                "1, labelled with the forward pass's device, kernel name, CPU instruction set and weight format.",
                {"device", "kernel", "isa", "weights"})
      .WithLabels({config.device, shard.info.kernel, shard.info.isa, shard.info.weights})
      .Set(1);
  // Every rank reads adapters itself (the leader for LoadAdapter and --lora, followers when
  // the leader installs one), checked against the model's config.json and --max-lora-rank.
  absl::StatusOr<model::PhiConfig> phi_config = model::LoadPhiConfig(config.model_dir);
  if (!phi_config.ok()) {
    PHI_LOG(ERROR, "model_load_failed").Str("model", config.model_dir).Str("error", phi_config.status().ToString());
    std::fprintf(stderr, "phi-worker: %s\n", phi_config.status().ToString().c_str());
    return 1;
  }
  const lora::LoraLimits limits{.max_rank = static_cast<int32_t>(config.max_lora_rank)};
  auto load_adapter = [base = *phi_config, limits](const std::string& name, const std::string& path) {
    return lora::LoadPeftAdapter(name, path, base, limits);
  };
  if (!(*group)->is_leader()) return RunFollowerRank(*server, **group, *shard.runner, load_adapter);

  // Rank 0: the engine drives the group through LeaderRunner (a pass-through for a group
  // of one). A broken group stops serving at once, drains (in-flight requests end
  // UNAVAILABLE) and exits non-zero so that the orchestrator restarts it.
  std::atomic<bool> group_failed{false};
  parallel::LeaderOptions leader_options;
  leader_options.on_failure = [&](const absl::Status& st) {
    if (group_failed.exchange(true)) return;
    PHI_LOG(ERROR, "group_failed").Str("error", st.ToString());
    std::fprintf(stderr, "phi-worker: %s\n", st.ToString().c_str());
    service.SetReady(false);
    server->SetServing(false);
    kill(getpid(), SIGTERM);  // wakes ServeUntilSignal below
  };
  parallel::LeaderRunner leader_runner(shard.runner.get(), &(*group)->host(), leader_options);
  LoadedRunner r = shard.info;
  r.runner = &leader_runner;
  service.SetAdapterSupport(load_adapter, leader_runner.max_adapter_slots());
  const int code = ServeEngine(config, r, service, *server, t0);
  leader_runner.Shutdown();  // followers exit 0
  return group_failed.load() ? 1 : code;
}

}  // namespace phi::worker
