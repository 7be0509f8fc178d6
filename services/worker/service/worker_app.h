// The phi-worker process: flags, model loading, engine, warm-up, serving, drain.
#ifndef PHI_SERVICES_WORKER_SERVICE_WORKER_APP_H_
#define PHI_SERVICES_WORKER_SERVICE_WORKER_APP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/config.h"
#include "services/common/server.h"

namespace phi::worker {

struct WorkerConfig {
  common::ServerOptions server;
  std::string model_dir;
  std::string model_name;          // empty: the model folder's name
  std::string dtype = "bf16";      // weights in memory: bf16 | f32
  // none | int8: --device cpu quantizes every linear layer at load (8-bit weights, one
  // scale per output feature and 1024 input features; see backends/cpu/matmul.h).
  std::string quantization = "none";
  bool quantize_lm_head = true;    // with --quantization int8: lm_head too (else BF16)
  std::string cpu_kernels = "auto";  // auto | avx512bf16 | avx512 | avx2 | portable (--device cpu)
  std::string device = "cpu";      // cpu | cuda (CudaModelRunner, BF16, one GPU)
  double gpu_memory_fraction = 0.9;  // --device cuda: share of free GPU memory for the KV cache
  int64_t threads = 2;
  int64_t kv_cache_blocks = 0;     // 0: as many as --kv-cache-mb holds
  int64_t kv_cache_mb = 1024;
  int64_t kv_block_size = 16;
  // --device cuda: KV cache elements, bf16 | fp8 (E4M3, half the bytes: twice the blocks and
  // less traffic per decode step, logits within a few 1e-2 of bf16). The CPU backend keeps
  // F32 KV and accepts only the default.
  std::string kv_cache_dtype = "bf16";
  // CPU default: a smaller step bounds how long a prefill chunk stalls running decodes
  // (bench/results/engine.md: ITL p99 731 ms at 128 vs 2.4 s at 512, same throughput).
  int64_t max_batch_tokens = 256;
  int64_t max_running = 64;
  int64_t max_waiting = 256;
  bool prefix_cache = true;
  // Tensor parallelism: N processes, one shard each (services/worker/parallel). Rank 0
  // serves WorkerService and broadcasts each step; ranks 1..N-1 replay them.
  int64_t rank = 0;
  int64_t world_size = 1;
  std::string leader;              // host:port of rank 0's rendezvous
  std::string tp_host;             // this rank's address for the Gloo mesh (default: see flag)
  int64_t tp_join_timeout_s = 120; // every rank must arrive within this
  int64_t tp_timeout_ms = 5000;    // a peer silent this long is dead
  // Constrained decoding (sampling.constraint): compiled grammars kept, the compile time limit
  // and the threads that compile (the leader only; followers never see a grammar).
  int64_t grammar_cache_entries = 256;
  double grammar_compile_timeout_seconds = 10;
  int64_t grammar_compile_threads = 1;
  // LoRA adapters (services/worker/lora): NAME=PATH read at start (--lora, repeatable), the
  // runner's adapter slots (in use at once; 0: no adapters), the largest rank accepted and
  // the adapters registered at once (LoadAdapter beyond it: RESOURCE_EXHAUSTED).
  std::vector<std::string> loras;
  int64_t max_loras = 4;
  int64_t max_lora_rank = 64;
  int64_t max_lora_adapters = 64;
};

// One --lora NAME=PATH.
struct LoraFlag {
  std::string name, path;
};
// Splits and checks every --lora (a name as LoadAdapter takes it, not `model_name`, given
// once; a path of at most 4096 bytes); errors name the flag.
absl::StatusOr<std::vector<LoraFlag>> ParseLoraFlags(const std::vector<std::string>& loras,
                                                     const std::string& model_name);

void AddWorkerFlags(common::FlagSet& flags, WorkerConfig* config);

// Checks what the flag ranges cannot (the model folder exists, the tensor-parallel group
// makes sense); errors name the flag. main() exits 2 on them.
absl::Status ValidateWorkerConfig(const WorkerConfig& config);

// The name GetStatus reports: --model-name, else the model folder's name.
std::string ServedModelName(const WorkerConfig& config);

// Starts the server (NOT_SERVING), loads the model, allocates the KV cache, runs one real
// forward pass, reads the --lora adapters (one forward pass through each), turns SERVING,
// and serves until SIGTERM/SIGINT; then drains. Returns the process exit code: 0 after a
// clean drain, 1 when the model cannot be loaded or run, 2 when a --lora adapter is refused.
int RunWorker(const WorkerConfig& config);

}  // namespace phi::worker

#endif  // PHI_SERVICES_WORKER_SERVICE_WORKER_APP_H_
