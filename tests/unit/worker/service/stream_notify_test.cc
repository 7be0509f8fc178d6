// What the callback service relies on below gRPC: RequestStream's edge-triggered output
// notifier (TryNext arms it, one Push fires it once, output pushed before the notifier was set
// is not missed) and StreamWritePool (runs queued tasks, skips destroyed ones, outlives nobody).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "services/worker/engine/request.h"
#include "services/worker/service/stream_write_pool.h"

namespace phi::worker {
namespace {

OutputChunk Tokens(std::vector<int32_t> ids, bool finished = false) {
  OutputChunk c;
  c.token_ids = std::move(ids);
  c.finished = finished;
  if (finished) {
    c.finish_reason = FinishReason::kLength;
    c.completion_tokens = 7;
  }
  return c;
}

TEST(RequestStreamNotifier, TryNextArmsAndOnePushFiresOnce) {
  RequestStream stream("r");
  int calls = 0;
  stream.set_output_notifier([&] { ++calls; });
  EXPECT_EQ(calls, 0);  // nothing pending: armed, not called
  stream.Push(Tokens({1}));
  EXPECT_EQ(calls, 1);
  stream.Push(Tokens({2}));  // not re-armed: the consumer has not looked yet
  stream.Push(Tokens({3}));
  EXPECT_EQ(calls, 1);
  OutputChunk out;
  ASSERT_TRUE(stream.TryNext(&out));  // merged, in order
  EXPECT_EQ(out.token_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_FALSE(out.finished);
  stream.Push(Tokens({4}));  // TryNext found output, so it did not re-arm
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(stream.TryNext(&out));
  EXPECT_EQ(out.token_ids, (std::vector<int32_t>{4}));
  EXPECT_FALSE(stream.TryNext(&out));  // empty: re-armed
  stream.Push(Tokens({5}));
  stream.Push(Tokens({}, /*finished=*/true));
  EXPECT_EQ(calls, 2);
  ASSERT_TRUE(stream.TryNext(&out));
  EXPECT_EQ(out.token_ids, (std::vector<int32_t>{5}));
  EXPECT_TRUE(out.finished);
  EXPECT_EQ(out.finish_reason, FinishReason::kLength);
  EXPECT_EQ(out.completion_tokens, 7);
}

TEST(RequestStreamNotifier, OutputPushedBeforeTheNotifierIsSetCallsItAtOnce) {
  RequestStream stream("r");
  stream.Push(Tokens({8, 9}));
  int calls = 0;
  stream.set_output_notifier([&] { ++calls; });
  EXPECT_EQ(calls, 1);
  stream.Push(Tokens({10}));  // not armed until a TryNext comes back empty
  EXPECT_EQ(calls, 1);
  OutputChunk out;
  ASSERT_TRUE(stream.TryNext(&out));
  EXPECT_EQ(out.token_ids, (std::vector<int32_t>{8, 9, 10}));
}

TEST(RequestStreamNotifier, NextStillWorksWithoutANotifier) {
  RequestStream stream("r");
  OutputChunk out;
  EXPECT_FALSE(stream.TryNext(&out));
  EXPECT_FALSE(stream.Next(&out, absl::Milliseconds(1)));
  std::thread pusher([&] { stream.Push(Tokens({1}, true)); });
  EXPECT_TRUE(stream.Next(&out, absl::Seconds(10)));
  pusher.join();
  EXPECT_TRUE(out.finished);
  EXPECT_TRUE(stream.finished());
}

// Producer and consumer on different threads, as in the service: every token arrives exactly
// once and in order, and the consumer never waits for a notification that does not come.
TEST(RequestStreamNotifier, ConcurrentPushAndDrainLoseNothing) {
  constexpr int kTokens = 20000;
  RequestStream stream("r");
  std::mutex mu;
  std::condition_variable cv;
  int notified = 0;
  stream.set_output_notifier([&] {
    std::lock_guard<std::mutex> l(mu);
    ++notified;
    cv.notify_one();
  });
  std::thread producer([&] {
    for (int i = 0; i < kTokens; ++i) stream.Push(Tokens({i}, i == kTokens - 1));
  });
  std::vector<int32_t> got;
  int seen = 0;
  bool finished = false;
  while (!finished) {
    OutputChunk out;
    while (stream.TryNext(&out)) {
      got.insert(got.end(), out.token_ids.begin(), out.token_ids.end());
      finished = finished || out.finished;
    }
    if (finished) break;
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return notified > seen; })) << got.size();
    seen = notified;
  }
  producer.join();
  ASSERT_EQ(got.size(), static_cast<size_t>(kTokens));
  for (int i = 0; i < kTokens; ++i) ASSERT_EQ(got[i], i);
  EXPECT_LT(notified, kTokens);  // notified per empty look, not per push... usually far fewer
}

struct CountingTask : StreamWritePool::Task {
  std::atomic<int> runs{0};
  void Run() override { runs.fetch_add(1); }
};

TEST(StreamWritePool, RunsQueuedTasksAndSkipsDestroyedOnes) {
  StreamWritePool pool(2);
  EXPECT_EQ(pool.num_threads(), 2);
  auto live = std::make_shared<CountingTask>();
  std::function<void()> notify = pool.Notifier(live);
  for (int i = 0; i < 100; ++i) notify();
  auto gone = std::make_shared<CountingTask>();
  std::function<void()> notify_gone = pool.Notifier(gone);
  std::weak_ptr<CountingTask> weak_gone = gone;
  gone.reset();
  notify_gone();  // its task is destroyed: skipped, no crash
  for (int i = 0; i < 1000 && live->runs.load() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_GE(live->runs.load(), 1);
  EXPECT_LE(live->runs.load(), 100);
  EXPECT_TRUE(weak_gone.expired());
}

TEST(StreamWritePool, NotifierOutlivesThePool) {
  auto task = std::make_shared<CountingTask>();
  std::function<void()> notify;
  {
    StreamWritePool pool(1);
    notify = pool.Notifier(task);
  }
  notify();  // the engine pushing after the service is gone: nothing runs, nothing breaks
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(task->runs.load(), 0);
}

}  // namespace
}  // namespace phi::worker
