// End to end on one GPU, in process (a program that prints a table, not a test): the
// continuous-batching engine over CudaModelRunner, i.e. phi-worker's path without gRPC, on a
// checkpoint of the real Phi-1.5 shape with random weights (`tools/make_model.py --preset
// phi-1_5 --dtype bf16`). phi_cuda_bench times PhiCudaModel::Forward alone; this adds what the
// worker adds per step: the engine's scheduling and sampling, CudaModelRunner::Step's plan and
// records, the streams' output (drained as phi-worker drains them: each stream's output
// notifier queues it on a StreamWritePool). The GPU waits during that host time, so these are
// the numbers a client can get.
//
// `streams` requests of --prompt-len random tokens generating --gen-len each, greedy (the
// engine asks each row's top-1 candidate record), ignore_eos, submitted together.
//
// usage: cuda_engine_bench --model DIR [--streams 1,32,256] [--prompt-len 512] [--gen-len 256]
//                          [--kv-dtype bf16|fp8] [--max-batch-tokens 2048]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/bench_args.h"
#include "bench/common/stream_drain.h"
#include "services/worker/backends/cuda/cuda_model_runner.h"
#include "services/worker/engine/engine.h"

namespace {

using phi::bench::Clock;
using phi::bench::Flag;
using phi::bench::IntFlag;
using phi::bench::Seconds;
using phi::bench::StreamDrain;
using phi::worker::Engine;
using phi::worker::EngineOptions;
using phi::worker::GenerationRequest;
using phi::worker::StreamWritePool;

}  // namespace

int main(int argc, char** argv) {
  const std::string model = Flag(argc, argv, "model", "");
  if (model.empty()) {
    std::fprintf(stderr, "usage: %s --model DIR [--streams 1,32,256] [--prompt-len 512] "
                         "[--gen-len 256] [--kv-dtype bf16|fp8] [--max-batch-tokens 2048]\n",
                 argv[0]);
    return 2;
  }
  const int prompt_len = IntFlag(argc, argv, "prompt-len", 512, 1);
  const int gen_len = IntFlag(argc, argv, "gen-len", 256, 1);
  const int max_batch_tokens = IntFlag(argc, argv, "max-batch-tokens", 2048, 1);
  const std::vector<int> streams = phi::bench::PositiveIntList(argc, argv, "streams", "1,32,256");
  if (streams.empty()) {
    std::fprintf(stderr, "--streams: expected positive integers\n");
    return 2;
  }
  phi::worker::cuda::CudaRunnerOptions ro;
  const std::string kv = Flag(argc, argv, "kv-dtype", "bf16");
  if (!phi::worker::cuda::ParseKvCacheDtype(kv, &ro.model.kv_dtype)) {
    std::fprintf(stderr, "--kv-dtype %s: expected bf16 or fp8\n", kv.c_str());
    return 2;
  }
  ro.model.max_seqs = *std::max_element(streams.begin(), streams.end());
  ro.model.max_tokens_per_step = std::max(max_batch_tokens, ro.model.max_seqs);
  ro.model.max_logit_rows = ro.model.max_tokens_per_step;
  auto runner = phi::worker::cuda::CudaModelRunner::Create(model, ro);
  if (!runner.ok()) {
    std::fprintf(stderr, "%s\n", runner.status().ToString().c_str());
    return 1;
  }
  auto blocks = (*runner)->KvBlocksThatFit(16);
  if (!blocks.ok()) {
    std::fprintf(stderr, "%s\n", blocks.status().ToString().c_str());
    return 1;
  }
  const int vocab = (*runner)->shape().tokenizer_vocab_size > 0
                        ? (*runner)->shape().tokenizer_vocab_size
                        : (*runner)->shape().vocab_size;
  std::printf("engine + CudaModelRunner, %s: %d layers, vocab %d, KV %s, %d blocks of 16; "
              "prompts %d, generated %d, greedy, max %d tokens per step\n\n",
              model.c_str(), (*runner)->shape().num_hidden_layers, (*runner)->shape().vocab_size,
              kv.c_str(), *blocks, prompt_len, gen_len, ro.model.max_tokens_per_step);
  std::printf("| streams | TTFT p50 ms | TTFT max ms | wall s | generated tok/s | decode tok/s "
              "(last first token to last token) |\n|---:|---:|---:|---:|---:|---:|\n");
  EngineOptions eo;
  eo.num_kv_blocks = *blocks;
  eo.block_size = 16;
  eo.max_batch_tokens = ro.model.max_tokens_per_step;
  eo.max_running = ro.model.max_seqs;
  eo.max_waiting = 4 * ro.model.max_seqs;
  eo.enable_prefix_cache = false;  // random prompts: nothing to share
  eo.eos_token_ids = (*runner)->generation().eos_token_ids;
  auto engine = Engine::Create(runner->get(), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }
  StreamWritePool pool(2);
  std::mt19937 rng(7);
  for (int round = -1; round < static_cast<int>(streams.size()); ++round) {
    const int b = round < 0 ? 1 : streams[round];  // round -1: warm-up (plans, graphs)
    const int gen = round < 0 ? 8 : gen_len;
    std::vector<std::shared_ptr<StreamDrain>> drains;
    const Clock::time_point t0 = Clock::now();
    for (int i = 0; i < b; ++i) {
      GenerationRequest r;
      r.prompt.resize(prompt_len);
      for (int32_t& t : r.prompt) t = static_cast<int32_t>(rng() % vocab);
      r.stopping.max_new_tokens = gen;
      r.stopping.ignore_eos = true;
      auto stream = (*engine)->Submit(r);
      if (!stream.ok()) {
        std::fprintf(stderr, "submit: %s\n", stream.status().ToString().c_str());
        return 1;
      }
      drains.push_back(StreamDrain::Start(*stream, Clock::now(), pool));
    }
    while (!std::all_of(drains.begin(), drains.end(), [](const auto& d) { return d->done(); })) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (round < 0) continue;
    std::vector<double> ttft;
    Clock::time_point last_first = t0, last = t0;
    int64_t tokens = 0;
    for (const auto& d : drains) {
      if (d->error() || d->tokens() != gen) {
        std::fprintf(stderr, "a stream ended with %lld tokens%s\n",
                     static_cast<long long>(d->tokens()), d->error() ? " (error)" : "");
        return 1;
      }
      ttft.push_back(d->ttft_seconds() * 1e3);
      last_first = std::max(last_first, d->first());
      last = std::max(last, d->last());
      tokens += d->tokens();
    }
    std::sort(ttft.begin(), ttft.end());
    const double wall = Seconds(t0, last);
    // Decode rate once every stream is past its prefill: tokens that arrived after the last
    // first token, over that time.
    int64_t late = 0;
    for (const auto& d : drains) late += d->TokensAfter(last_first);
    const double decode_s = Seconds(last_first, last);
    std::printf("| %d | %.2f | %.2f | %.3f | %.0f | %.0f |\n", b, ttft[ttft.size() / 2],
                ttft.back(), wall, tokens / wall, decode_s > 0 ? late / decode_s : 0.0);
  }
  return 0;
}
