// Helpers shared by the engine and sampler tests (fake runner) and the integration tests (CPU
// runner): run a request to its end, run many at once with staggered arrivals, random requests
// and logits rows.
#ifndef PHI_TESTS_UNIT_WORKER_ENGINE_ENGINE_TEST_UTIL_H_
#define PHI_TESTS_UNIT_WORKER_ENGINE_ENGINE_TEST_UTIL_H_

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/worker/engine/engine.h"

namespace phi::worker::testing {

struct Completion {
  std::vector<int32_t> tokens;
  std::vector<PositionLogprob> logprobs;
  std::vector<PositionLogprob> prompt_logprobs;
  OutputChunk last;  // the final chunk (finish reason, usage, timings)
};

inline bool SameLogprobs(const std::vector<PositionLogprob>& a, const std::vector<PositionLogprob>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].token.token_id != b[i].token.token_id || a[i].token.logprob != b[i].token.logprob) return false;
    if (a[i].top.size() != b[i].top.size()) return false;
    for (size_t j = 0; j < a[i].top.size(); ++j) {
      if (a[i].top[j].token_id != b[i].top[j].token_id || a[i].top[j].logprob != b[i].top[j].logprob) return false;
    }
  }
  return true;
}

// Reads a stream to its final chunk (or gives up after `timeout`).
inline Completion Drain(RequestStream& stream, absl::Duration timeout = absl::Seconds(60)) {
  Completion c;
  const absl::Time deadline = absl::Now() + timeout;
  OutputChunk chunk;
  while (absl::Now() < deadline) {
    if (!stream.Next(&chunk, absl::Milliseconds(100))) continue;
    c.tokens.insert(c.tokens.end(), chunk.token_ids.begin(), chunk.token_ids.end());
    c.logprobs.insert(c.logprobs.end(), chunk.logprobs.begin(), chunk.logprobs.end());
    c.prompt_logprobs.insert(c.prompt_logprobs.end(), chunk.prompt_logprobs.begin(), chunk.prompt_logprobs.end());
    if (chunk.finished) {
      c.last = chunk;
      return c;
    }
  }
  c.last.status = absl::DeadlineExceededError("test timed out waiting for the stream");
  c.last.finish_reason = FinishReason::kError;
  return c;
}

inline absl::StatusOr<Completion> RunOne(Engine& engine, const GenerationRequest& request) {
  absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine.Submit(request);
  if (!stream.ok()) return stream.status();
  return Drain(**stream);
}

// Submits every request from its own thread after its delay; returns completions in order.
inline std::vector<Completion> RunConcurrently(Engine& engine, const std::vector<GenerationRequest>& requests,
                                               const std::vector<int>& delays_us) {
  std::vector<Completion> out(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      std::this_thread::sleep_for(std::chrono::microseconds(delays_us.empty() ? 0 : delays_us[i]));
      absl::StatusOr<Completion> c = RunOne(engine, requests[i]);
      if (c.ok()) {
        out[i] = std::move(*c);
      } else {
        out[i].last.status = c.status();
        out[i].last.finish_reason = FinishReason::kError;
      }
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

inline std::vector<int32_t> RandomPrompt(std::mt19937_64& rng, int32_t min_len, int32_t max_len, int32_t vocab) {
  std::uniform_int_distribution<int32_t> len(min_len, max_len), tok(0, vocab - 1);
  std::vector<int32_t> p(len(rng));
  for (auto& t : p) t = tok(rng);
  return p;
}

// A row of `n` normal logits (mean 0, deviation `scale`), the same for the same seed.
inline std::vector<float> RandomLogits(int n, uint64_t seed, float scale = 3.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> l(n);
  for (auto& v : l) v = d(rng);
  return l;
}

// Waits until the engine reports nothing waiting or running.
inline bool WaitIdle(Engine& engine, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    EngineStatus s = engine.Status();
    if (s.waiting == 0 && s.running == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

}  // namespace phi::worker::testing

#endif  // PHI_TESTS_UNIT_WORKER_ENGINE_ENGINE_TEST_UTIL_H_
