// The engine's own host time per step at the GPU worker's batch sizes (a program that prints
// a table, not a test). The engine thread schedules, samples and pushes output between two
// runner Steps; with the GPU runner those microseconds are time the GPU waits, so they bound
// the worker's tokens/s no matter how fast the kernels are.
//
// The engine runs over InstantRunner: the Phi-1.5 shape, no model. A sampled row asked as
// candidates (the CUDA runner's Step path: greedy rows get one top-1 record) is answered with
// that record; other rows as whole rows of vocab_size floats, as the CUDA runner copies them.
// `streams` requests of --prompt-len tokens generating --gen-len tokens each, greedy,
// ignore_eos, submitted together; the table reports, over the steps where every
// sequence decodes, the median host gap between the end of one Step and the start of the
// next, and what share of a GPU step of --gpu-step-ms that gap adds.
//
// usage: phi_engine_overhead_bench [--streams 1,32,256] [--prompt-len 512] [--gen-len 256]
//                                  [--max-batch-tokens 2048] [--gpu-step-ms 6] [--write-pool 2]
// --write-pool N: output consumed as phi-worker does (each stream's output notifier queues it
// on a StreamWritePool of N threads, which drains it with TryNext); 0: a thread per stream
// blocked in RequestStream::Next, as the sync-API worker had.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/bench_args.h"
#include "bench/common/stream_drain.h"
#include "services/worker/engine/engine.h"
#include "services/worker/engine/model_runner.h"
#include "services/worker/service/stream_write_pool.h"

namespace {

using phi::bench::Clock;
using phi::bench::IntFlag;
using phi::worker::Engine;
using phi::worker::EngineOptions;
using phi::worker::GenerationRequest;
using phi::worker::KvCacheSpec;
using phi::worker::LogitCandidates;
using phi::worker::ModelRunner;
using phi::worker::ModelShape;
using phi::worker::OutputChunk;
using phi::worker::StepBatch;
using phi::worker::StepLogits;

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

// A runner that answers at once. Records when each Step started and ended, and whether all
// its sequences were decoding.
class InstantRunner final : public ModelRunner {
 public:
  InstantRunner() {
    shape_.vocab_size = 51200;
    shape_.tokenizer_vocab_size = 50295;
    shape_.max_position_embeddings = 2048;
    shape_.num_hidden_layers = 24;
    shape_.num_attention_heads = 32;
    shape_.head_dim = 64;
  }
  const ModelShape& shape() const override { return shape_; }
  absl::Status AllocateKvCache(const KvCacheSpec&) override { return absl::OkStatus(); }
  int64_t KvBlockBytes(int32_t block_size) const override { return 196608LL * block_size; }

  absl::Status Step(const StepBatch& batch, StepLogits* out) override {
    const Clock::time_point start = Clock::now();
    const size_t n = batch.seqs.size();
    out->vocab_size = shape_.vocab_size;
    out->first_row.assign(n, 0);
    out->num_rows.assign(n, 0);
    out->candidates.assign(n, LogitCandidates{});
    int32_t rows = 0;
    bool all_decode = true;
    for (size_t i = 0; i < n; ++i) {
      const auto& s = batch.seqs[i];
      all_decode = all_decode && s.tokens.size() == 1;
      // A token that depends on the sequence and position only (never an eos id: ignore_eos).
      const int32_t token = static_cast<int32_t>((s.seq_id * 7919 + s.start_pos * 104729 +
                                                  s.tokens.size()) % 50000);
      if (s.num_candidates > 0) {
        LogitCandidates& c = out->candidates[i];
        c.ids = {token};
        c.values = {10.0f};
        c.exact = 1;
        c.bound = 0.0f;  // every other logit is 0
        c.log_sum_exp = 10.0 + std::log1p((shape_.vocab_size - 1) * std::exp(-10.0));
        continue;
      }
      out->first_row[i] = rows;
      out->num_rows[i] = s.all_logits ? static_cast<int32_t>(s.tokens.size()) : 1;
      rows += out->num_rows[i];
    }
    out->data.assign(static_cast<size_t>(rows) * shape_.vocab_size, 0.0f);
    for (size_t i = 0; i < n; ++i) {
      if (out->num_rows[i] == 0) continue;
      const auto& s = batch.seqs[i];
      const int32_t token = static_cast<int32_t>((s.seq_id * 7919 + s.start_pos * 104729 +
                                                  s.tokens.size()) % 50000);
      for (int32_t r = 0; r < out->num_rows[i]; ++r) {
        out->data[static_cast<size_t>(out->first_row[i] + r) * shape_.vocab_size + token] = 10.0f;
      }
    }
    const Clock::time_point end = Clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    steps_.push_back({start, end, all_decode, static_cast<int>(n)});
    return absl::OkStatus();
  }

  struct StepRecord {
    Clock::time_point start, end;
    bool all_decode;
    int seqs;
  };
  std::vector<StepRecord> TakeSteps() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(steps_);
  }

 private:
  ModelShape shape_;
  std::mutex mu_;
  std::vector<StepRecord> steps_;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int prompt_len = IntFlag(argc, argv, "prompt-len", 512, 0);
  const int gen_len = IntFlag(argc, argv, "gen-len", 256, 0);
  const int max_batch_tokens = IntFlag(argc, argv, "max-batch-tokens", 2048, 0);
  const int gpu_step_ms = IntFlag(argc, argv, "gpu-step-ms", 6, 0);
  // 0: a thread per stream blocked in Next() (the sync worker); N: the callback worker's
  // StreamWritePool of N threads.
  const int pool_threads = IntFlag(argc, argv, "write-pool", 2, 0);
  const std::vector<int> streams = phi::bench::PositiveIntList(argc, argv, "streams", "1,32,256");
  std::printf("engine over a runner that takes no time (Phi-1.5 shape, vocab 51200): prompts of "
              "%d tokens, %d generated, greedy (one top-1 candidate record per row), "
              "max %d tokens per step; output read by %s\n\n",
              prompt_len, gen_len, max_batch_tokens,
              pool_threads == 0 ? "a thread per stream (Next)"
                                : ("a StreamWritePool of " + std::to_string(pool_threads) +
                                   " threads (TryNext)").c_str());
  std::printf("| streams | decode steps | host gap per step, median us | p90 us | host us per "
              "generated token | share of a %d ms GPU step |\n|---:|---:|---:|---:|---:|---:|\n",
              gpu_step_ms);
  for (int b : streams) {
    InstantRunner runner;
    EngineOptions o;
    o.block_size = 16;
    o.num_kv_blocks = b * ((prompt_len + gen_len + 15) / 16 + 1) + 16;
    o.max_batch_tokens = std::max(max_batch_tokens, b);
    o.max_running = b;
    o.max_waiting = b + 1;
    o.enable_prefix_cache = false;
    auto engine = Engine::Create(&runner, o);
    if (!engine.ok()) {
      std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
      return 1;
    }
    // Submitted from one thread (Submit only queues), so the batch forms at once.
    std::vector<std::shared_ptr<phi::worker::RequestStream>> submitted;
    for (int i = 0; i < b; ++i) {
      GenerationRequest r;
      r.prompt.resize(prompt_len);
      for (int t = 0; t < prompt_len; ++t) r.prompt[t] = (i * 131 + t * 17) % 50000;
      r.stopping.max_new_tokens = gen_len;
      r.stopping.ignore_eos = true;
      auto stream = (*engine)->Submit(r);
      if (!stream.ok()) {
        std::fprintf(stderr, "submit: %s\n", stream.status().ToString().c_str());
        return 1;
      }
      submitted.push_back(*stream);
    }
    std::atomic<int64_t> tokens{0};
    if (pool_threads == 0) {
      // A thread per stream waiting in Next() (the sync gRPC worker's model).
      std::vector<std::thread> clients;
      for (int i = 0; i < b; ++i) {
        clients.emplace_back([&, i] {
          OutputChunk chunk;
          while (true) {
            if (!submitted[i]->Next(&chunk, absl::Milliseconds(100))) continue;
            tokens += static_cast<int64_t>(chunk.token_ids.size());
            if (chunk.finished) break;
          }
        });
      }
      for (auto& c : clients) c.join();
    } else {
      // The callback worker's model: the engine thread only queues a stream on the
      // StreamWritePool through its output notifier; a pool thread drains it with TryNext.
      phi::worker::StreamWritePool pool(pool_threads);
      std::vector<std::shared_ptr<phi::bench::StreamDrain>> drains;
      for (int i = 0; i < b; ++i) {
        drains.push_back(phi::bench::StreamDrain::Start(submitted[i], Clock::now(), pool));
      }
      while (!std::all_of(drains.begin(), drains.end(), [](const auto& d) { return d->done(); })) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      for (const auto& d : drains) tokens += d->tokens();
    }
    engine->reset();
    const std::vector<InstantRunner::StepRecord> steps = runner.TakeSteps();
    std::vector<double> gaps;
    for (size_t i = 1; i < steps.size(); ++i) {
      // Steady decode: this step and the one before decode (nearly) the whole batch.
      if (steps[i].all_decode && steps[i - 1].all_decode && steps[i].seqs * 10 >= b * 9 &&
          steps[i - 1].seqs * 10 >= b * 9) {
        gaps.push_back(Us(steps[i - 1].end, steps[i].start));
      }
    }
    std::vector<double> sorted = gaps;
    std::sort(sorted.begin(), sorted.end());
    const double p90 = sorted.empty() ? 0 : sorted[sorted.size() * 9 / 10];
    const double med = Median(gaps);
    std::printf("| %d | %zu | %.1f | %.1f | %.2f | %.1f%% |\n", b, gaps.size(), med, p90, med / b,
                100.0 * med / (med + gpu_step_ms * 1000.0));
    if (tokens.load() != static_cast<int64_t>(b) * gen_len) {
      std::fprintf(stderr, "expected %d tokens, got %lld\n", b * gen_len,
                   static_cast<long long>(tokens.load()));
      return 1;
    }
  }
  return 0;
}
