// Engine benchmark (a program that prints tables, not a test): the continuous-batching
// engine over the CPU runner, in process (no gRPC), closed-loop clients.
//
//  1. Throughput and latency at concurrency 1, 4, 16, 64: every client sends requests back to
//     back (random prompt of --prompt-len tokens, --gen-len generated, ignore_eos); reports
//     generated tokens/s, TTFT and inter-token latency p50/p99 as the client sees them.
//  2. Multi-turn chat: conversations sharing a system prompt, each turn re-sending the
//     conversation with the previous answer and a new user message; prefix cache on vs off:
//     prompt tokens, tokens served from the cache, prefill tokens computed, time, TTFT.
//
// usage: phi_engine_bench --model DIR [--threads 2] [--prompt-len 128] [--gen-len 64]
//                         [--requests 2] [--concurrency 1,4,16,64] [--dtype bf16|f32] [--kv-blocks 800]
//                         [--conversations 8] [--turns 4] [--system-len 256] [--max-batch-tokens 512]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/bench_args.h"
#include "services/worker/backends/cpu/phi_cpu_runner.h"
#include "services/worker/engine/engine.h"

namespace {

using phi::bench::Clock;
using phi::bench::Flag;
using phi::bench::IntFlag;
using phi::bench::Seconds;
using phi::worker::Engine;
using phi::worker::EngineOptions;
using phi::worker::GenerationRequest;
using phi::worker::OutputChunk;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

struct ClientStats {
  int64_t tokens = 0;
  int64_t cached = 0;
  int64_t prompt = 0;
  std::vector<double> ttft, itl;
};

// Runs one request to its end, recording client-side TTFT and per-token gaps.
std::vector<int32_t> RunRequest(Engine& engine, const GenerationRequest& r, ClientStats* stats) {
  const Clock::time_point t0 = Clock::now();
  auto stream = engine.Submit(r);
  if (!stream.ok()) {
    std::fprintf(stderr, "submit failed: %s\n", stream.status().ToString().c_str());
    std::exit(1);
  }
  std::vector<int32_t> out;
  Clock::time_point last = t0;
  OutputChunk chunk;
  while (true) {
    if (!(*stream)->Next(&chunk, absl::Milliseconds(100))) continue;
    const Clock::time_point now = Clock::now();
    const size_t n = chunk.token_ids.size();
    if (n > 0) {
      if (out.empty()) {
        stats->ttft.push_back(Seconds(t0, now));
        for (size_t i = 1; i < n; ++i) stats->itl.push_back(0.0);
      } else {
        const double gap = Seconds(last, now) / static_cast<double>(n);
        for (size_t i = 0; i < n; ++i) stats->itl.push_back(gap);
      }
      last = now;
      out.insert(out.end(), chunk.token_ids.begin(), chunk.token_ids.end());
    }
    if (chunk.finished) {
      if (chunk.finish_reason == phi::worker::FinishReason::kError) {
        std::fprintf(stderr, "request failed: %s\n", chunk.status.ToString().c_str());
        std::exit(1);
      }
      stats->tokens += static_cast<int64_t>(out.size());
      stats->cached += chunk.cached_prompt_tokens;
      stats->prompt += chunk.prompt_tokens;
      return out;
    }
  }
}

std::vector<int32_t> RandomTokens(std::mt19937_64& rng, int n, int vocab) {
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = d(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string model = Flag(argc, argv, "model", "");
  if (model.empty()) {
    std::fprintf(stderr, "usage: %s --model DIR [--threads N] [--prompt-len N] [--gen-len N] [--requests N]\n",
                 argv[0]);
    return 2;
  }
  const int threads = IntFlag(argc, argv, "threads", 2);
  const int prompt_len = IntFlag(argc, argv, "prompt-len", 128);
  const int gen_len = IntFlag(argc, argv, "gen-len", 64);
  const int requests_per_client = IntFlag(argc, argv, "requests", 2);
  const std::vector<int> concurrency = phi::bench::PositiveIntList(argc, argv, "concurrency", "1,4,16,64");

  phi::worker::cpu::CpuRunnerOptions ro;
  ro.num_threads = threads;
  ro.weights = Flag(argc, argv, "dtype", "bf16") == "f32" ? phi::worker::cpu::WeightFormat::kF32 : phi::worker::cpu::WeightFormat::kBF16;
  auto runner = phi::worker::cpu::CpuModelRunner::Create(model, ro);
  if (!runner.ok()) {
    std::fprintf(stderr, "%s\n", runner.status().ToString().c_str());
    return 1;
  }
  const phi::worker::ModelShape& shape = (*runner)->shape();
  const int vocab = shape.tokenizer_vocab_size;
  std::printf("model %s: hidden %d, layers %d, heads %d, vocab %d, kernel %s, %d threads, %.1f MB weights/step\n\n",
              model.c_str(), (*runner)->config().hidden_size, shape.num_hidden_layers, shape.num_attention_heads,
              shape.vocab_size, (*runner)->kernel_name().c_str(), threads,
              (*runner)->weight_bytes_per_step() / 1e6);

  // Enough for 64 clients x (prompt + generated); every block is zero-filled memory.
  const int kv_blocks = IntFlag(argc, argv, "kv-blocks", 800);
  const int max_batch_tokens = IntFlag(argc, argv, "max-batch-tokens", 512);
  auto make_engine = [&](bool prefix_cache) {
    EngineOptions o;
    o.num_kv_blocks = kv_blocks;
    o.block_size = 16;
    o.max_batch_tokens = max_batch_tokens;
    o.max_running = 64;
    o.max_waiting = 1024;
    o.enable_prefix_cache = prefix_cache;
    o.eos_token_ids = (*runner)->generation().eos_token_ids;
    auto e = Engine::Create(runner->get(), o);
    if (!e.ok()) {
      std::fprintf(stderr, "%s\n", e.status().ToString().c_str());
      std::exit(1);
    }
    return std::move(*e);
  };

  // ---- 1. concurrency sweep ----
  std::printf("## Throughput and latency (prompt %d tokens, %d generated, %d requests per client, "
              "max %d tokens per step)\n\n",
              prompt_len, gen_len, requests_per_client, max_batch_tokens);
  std::printf("| concurrency | requests | generated tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int c : concurrency) {
    auto engine = make_engine(/*prefix_cache=*/false);  // random prompts: nothing to share anyway
    std::vector<ClientStats> stats(c);
    std::vector<std::thread> clients;
    const Clock::time_point t0 = Clock::now();
    for (int i = 0; i < c; ++i) {
      clients.emplace_back([&, i] {
        std::mt19937_64 rng(1000 + i);
        for (int k = 0; k < requests_per_client; ++k) {
          GenerationRequest r;
          r.prompt = RandomTokens(rng, prompt_len, vocab);
          r.stopping.max_new_tokens = gen_len;
          r.stopping.ignore_eos = true;
          RunRequest(*engine, r, &stats[i]);
        }
      });
    }
    for (auto& t : clients) t.join();
    const double wall = Seconds(t0, Clock::now());
    ClientStats all;
    for (auto& s : stats) {
      all.tokens += s.tokens;
      all.ttft.insert(all.ttft.end(), s.ttft.begin(), s.ttft.end());
      all.itl.insert(all.itl.end(), s.itl.begin(), s.itl.end());
    }
    std::printf("| %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", c, c * requests_per_client, all.tokens / wall,
                1e3 * Percentile(all.ttft, 0.5), 1e3 * Percentile(all.ttft, 0.99), 1e3 * Percentile(all.itl, 0.5),
                1e3 * Percentile(all.itl, 0.99));
    std::fflush(stdout);
  }

  // ---- 2. multi-turn chat, prefix cache on vs off ----
  const int conversations = IntFlag(argc, argv, "conversations", 8);
  const int turns = IntFlag(argc, argv, "turns", 4);
  const int system_len = IntFlag(argc, argv, "system-len", 256);
  const int user_len = 32, answer_len = 32;
  std::printf("\n## Multi-turn chat: %d conversations x %d turns, shared %d-token system prompt, %d-token user "
              "turns, %d-token answers, 4 conversations at a time\n\n",
              conversations, turns, system_len, user_len, answer_len);
  std::printf("| prefix cache | prompt tokens | served from cache | prefill computed | wall s | TTFT p50 ms | "
              "TTFT p99 ms |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  std::vector<std::vector<int32_t>> outputs[2];
  for (bool cache : {false, true}) {
    auto engine = make_engine(cache);
    std::mt19937_64 sys_rng(7);
    const std::vector<int32_t> system = RandomTokens(sys_rng, system_len, vocab);
    std::vector<ClientStats> stats(conversations);
    std::vector<std::vector<int32_t>> answers(conversations);
    std::atomic<int> next{0};
    const Clock::time_point t0 = Clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; ++w) {
      workers.emplace_back([&] {
        for (int conv = next++; conv < conversations; conv = next++) {
          std::mt19937_64 rng(500 + conv);
          std::vector<int32_t> history = system;
          for (int t = 0; t < turns; ++t) {
            const std::vector<int32_t> user = RandomTokens(rng, user_len, vocab);
            history.insert(history.end(), user.begin(), user.end());
            GenerationRequest r;
            r.prompt = history;
            r.stopping.max_new_tokens = answer_len;
            r.stopping.ignore_eos = true;
            const std::vector<int32_t> answer = RunRequest(*engine, r, &stats[conv]);
            history.insert(history.end(), answer.begin(), answer.end());
            answers[conv].insert(answers[conv].end(), answer.begin(), answer.end());
          }
        }
      });
    }
    for (auto& t : workers) t.join();
    const double wall = Seconds(t0, Clock::now());
    ClientStats all;
    for (auto& s : stats) {
      all.prompt += s.prompt;
      all.cached += s.cached;
      all.ttft.insert(all.ttft.end(), s.ttft.begin(), s.ttft.end());
    }
    std::printf("| %s | %lld | %lld (%.0f%%) | %lld | %.2f | %.1f | %.1f |\n", cache ? "on" : "off",
                static_cast<long long>(all.prompt), static_cast<long long>(all.cached),
                100.0 * all.cached / std::max<int64_t>(1, all.prompt),
                static_cast<long long>(all.prompt - all.cached), wall, 1e3 * Percentile(all.ttft, 0.5),
                1e3 * Percentile(all.ttft, 0.99));
    std::fflush(stdout);
    outputs[cache ? 1 : 0] = answers;
  }
  std::printf("\nanswers with and without the prefix cache identical: %s\n",
              outputs[0] == outputs[1] ? "yes" : "NO");
  return outputs[0] == outputs[1] ? 0 : 1;
}
