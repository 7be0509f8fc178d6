// A generation stream read the way phi-worker reads it (header only, for the benchmarks): the
// stream's output notifier queues the drain on a StreamWritePool, whose thread takes what is
// pending with TryNext (GenerateCall::Pump's pattern). Records the tokens, when they arrived
// and how the stream ended.
#ifndef PHI_BENCH_COMMON_STREAM_DRAIN_H_
#define PHI_BENCH_COMMON_STREAM_DRAIN_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "bench/common/bench_args.h"
#include "services/worker/engine/request.h"
#include "services/worker/service/stream_write_pool.h"

namespace phi::bench {

class StreamDrain final : public worker::StreamWritePool::Task {
 public:
  // Makes the drain and sets it as `stream`'s output notifier on `pool`.
  static std::shared_ptr<StreamDrain> Start(std::shared_ptr<worker::RequestStream> stream,
                                            Clock::time_point submitted,
                                            const worker::StreamWritePool& pool) {
    auto drain = std::make_shared<StreamDrain>(stream, submitted);
    stream->set_output_notifier(pool.Notifier(drain));
    return drain;
  }

  StreamDrain(std::shared_ptr<worker::RequestStream> stream, Clock::time_point submitted)
      : stream_(std::move(stream)), submitted_(submitted) {}

  void Run() override {
    std::lock_guard<std::mutex> lock(mu_);  // one pool thread at a time per stream
    worker::OutputChunk chunk;
    while (stream_->TryNext(&chunk)) {
      const Clock::time_point now = Clock::now();
      if (tokens_ == 0 && !chunk.token_ids.empty()) first_ = now;
      tokens_ += static_cast<int64_t>(chunk.token_ids.size());
      arrivals_.push_back({now, static_cast<int>(chunk.token_ids.size())});
      if (chunk.finished) {
        last_ = now;
        error_ = chunk.finish_reason == worker::FinishReason::kError;
        done_.store(true);
      }
    }
  }

  // The accessors below are for after done().
  bool done() const { return done_.load(); }
  double ttft_seconds() const { return Seconds(submitted_, first_); }
  Clock::time_point first() const { return first_; }
  Clock::time_point last() const { return last_; }
  int64_t tokens() const { return tokens_; }
  bool error() const { return error_; }
  // Tokens that arrived after `t`.
  int64_t TokensAfter(Clock::time_point t) const {
    int64_t n = 0;
    for (const auto& [when, count] : arrivals_) n += when > t ? count : 0;
    return n;
  }

 private:
  std::mutex mu_;
  const std::shared_ptr<worker::RequestStream> stream_;
  const Clock::time_point submitted_;
  Clock::time_point first_, last_;
  int64_t tokens_ = 0;
  std::vector<std::pair<Clock::time_point, int>> arrivals_;
  bool error_ = false;
  std::atomic<bool> done_{false};
};

}  // namespace phi::bench

#endif  // PHI_BENCH_COMMON_STREAM_DRAIN_H_
