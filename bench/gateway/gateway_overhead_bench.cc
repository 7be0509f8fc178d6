// What the gateway adds: time to first token and per-token latency of the same
// generation sent through phi-gateway (CompleteStream: encode, route, decode,
// stream) and straight to phi-worker (Generate on the prompt's ids), at several
// numbers of concurrent streams. Prints a Markdown table.
//
//   gateway_overhead_bench --gateway 127.0.0.1:50051 --worker 127.0.0.1:50053
//       --tokenizer 127.0.0.1:50052 [--streams 1,64] [--requests 8] [--tokens 64] [--rounds 3]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "phi/v1/gateway.grpc.pb.h"
#include "phi/v1/tokenizer.grpc.pb.h"
#include "phi/v1/worker.grpc.pb.h"
#include "services/common/config.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Sample {
  double ttft = 0;        // seconds to the first token
  double per_token = 0;   // mean seconds between tokens after the first
  int tokens = 0;
  int messages = 0;      // messages that carried tokens (a sender may merge tokens into one)
  bool ok = false;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

grpc::ChannelArguments Args() {
  grpc::ChannelArguments a;
  a.SetMaxReceiveMessageSize(64 << 20);
  return a;
}

struct Row {
  double ttft50, ttft99, tok50, tok99, tps;
  double tokens_per_message;
  int failed;
};

Row Summarize(const std::vector<Sample>& samples, double wall);

// Runs `requests` requests one after another on each of `streams` concurrent streams. Every
// request is a callback-API reactor (no client thread waits on a stream), so the client's own
// cost per message is small and the same on both paths: with one sync thread per stream, the
// client woke a thread per token and became the bottleneck at 64 streams.
template <typename Resp>
class Streams {
 public:
  // Starts one request on `reactor` (binds the call and its context).
  using StartFn = std::function<void(grpc::ClientContext*, grpc::ClientReadReactor<Resp>*)>;
  // Tokens a message carries (0: none); sets *total when the message gives the request's total.
  using TokensFn = std::function<int(const Resp&, int* total)>;

  Streams(StartFn start, TokensFn tokens) : start_(std::move(start)), tokens_(std::move(tokens)) {}

  // Stream i starts i * stagger after the first, so that concurrent streams do not run in
  // lockstep (all prefilling at once, then all decoding): their next requests then keep
  // arriving spread out, as independent users' would.
  Row Run(int streams, int requests, Clock::duration stagger = {}) {
    if (requests < 1) return {};
    samples_.clear();
    left_ = streams;
    const auto t0 = Clock::now();
    for (int i = 0; i < streams; ++i) {
      std::this_thread::sleep_until(t0 + i * stagger);
      (new Request(this, requests - 1))->Start();
    }
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return left_ == 0; });
    }
    return Summarize(samples_, Seconds(Clock::now() - t0));
  }

 private:
  class Request : public grpc::ClientReadReactor<Resp> {
   public:
    Request(Streams* owner, int then) : owner_(owner), then_(then) {}
    void Start() {
      t0_ = Clock::now();
      owner_->start_(&ctx_, this);
      this->StartRead(&resp_);
      this->StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;
      int total = -1;
      const int n = owner_->tokens_(resp_, &total);
      if (n > 0) {
        last_ = Clock::now();
        if (counted_ == 0) first_ = last_;
        counted_ += n;
        ++messages_;
      }
      if (total >= 0) total_ = total;
      this->StartRead(&resp_);
    }
    void OnDone(const grpc::Status& status) override {
      Sample s;
      s.tokens = total_ >= 0 ? total_ : counted_;
      s.messages = messages_;
      s.ok = status.ok() && counted_ > 0;
      s.ttft = Seconds(first_ - t0_);
      s.per_token = s.tokens > 1 ? Seconds(last_ - first_) / (s.tokens - 1) : 0;
      owner_->Finished(s, then_);
      delete this;
    }

   private:
    Streams* owner_;
    int then_;  // requests still to run on this stream after this one
    grpc::ClientContext ctx_;
    Resp resp_;
    Clock::time_point t0_, first_, last_;
    int counted_ = 0, total_ = -1, messages_ = 0;
  };

  void Finished(const Sample& s, int then) {
    {
      std::lock_guard<std::mutex> l(mu_);
      samples_.push_back(s);
    }
    if (then > 0) {
      (new Request(this, then - 1))->Start();
      return;
    }
    std::lock_guard<std::mutex> l(mu_);
    if (--left_ == 0) cv_.notify_all();
  }

  StartFn start_;
  TokensFn tokens_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Sample> samples_;
  int left_ = 0;
};

Row Summarize(const std::vector<Sample>& samples, double wall) {
  std::vector<double> ttft, tok;
  int64_t total = 0, messages = 0;
  int failed = 0;
  for (const auto& s : samples) {
    if (!s.ok) {
      ++failed;
      continue;
    }
    ttft.push_back(s.ttft);
    tok.push_back(s.per_token);
    total += s.tokens;
    messages += s.messages;
  }
  return {Percentile(ttft, 0.5), Percentile(ttft, 0.99), Percentile(tok, 0.5), Percentile(tok, 0.99), total / wall,
          messages > 0 ? static_cast<double>(total) / messages : 0.0, failed};
}

// The median of each column over rounds (rounds alternate worker and gateway, so a slow
// moment of a shared machine lands on both paths alike).
Row Median(const std::vector<Row>& rows) {
  auto med = [&](double Row::*f) {
    std::vector<double> v;
    for (const Row& r : rows) v.push_back(r.*f);
    return Percentile(v, 0.5);
  };
  int failed = 0;
  for (const Row& r : rows) failed += r.failed;
  return {med(&Row::ttft50), med(&Row::ttft99), med(&Row::tok50), med(&Row::tok99),
          med(&Row::tps), med(&Row::tokens_per_message), failed};
}

// A one-request sync check that the stack answers (start-up).
bool GatewayAnswers(phi::v1::ChatService::Stub* stub, const std::string& prompt) {
  phi::v1::CompleteRequest req;
  req.set_prompt(prompt);
  req.mutable_stopping()->set_max_new_tokens(2);
  grpc::ClientContext ctx;
  phi::v1::CompleteResponse resp;
  return stub->Complete(&ctx, req, &resp).ok();
}

}  // namespace

int main(int argc, char** argv) {
  std::string gateway = "127.0.0.1:50051", worker = "127.0.0.1:50053", tokenizer = "127.0.0.1:50052";
  std::string streams_list = "1,64";
  std::string prompt =
      "Write a short story about a robot who learns to paint, in the style of a fairy tale, "
      "with a happy ending and a moral at the end.";
  int64_t requests = 8, tokens = 64, warmup = 2, rounds = 3;
  double stagger_ms = 0;
  std::string paths = "worker,gateway";
  double wait_seconds = 0;
  phi::common::FlagSet flags("gateway_overhead_bench", "TTFT and per-token latency: gateway vs worker.");
  flags.AddString("gateway", "", &gateway, "phi-gateway gRPC address");
  flags.AddString("worker", "", &worker, "phi-worker gRPC address (the gateway's only worker)");
  flags.AddString("tokenizer", "", &tokenizer, "phi-tokenizer address (to get the prompt's ids)");
  flags.AddString("streams", "", &streams_list, "comma-separated concurrent stream counts");
  flags.AddString("prompt", "", &prompt, "prompt text");
  flags.AddInt("requests", "", &requests, 1, 100000, "requests per stream");
  flags.AddInt("tokens", "", &tokens, 2, 4096, "tokens generated per request (ignore_eos)");
  flags.AddInt("warmup", "", &warmup, 0, 1000, "warm-up requests per target");
  flags.AddInt("rounds", "", &rounds, 1, 1000, "rounds per stream count (each runs the worker, then the gateway)");
  flags.AddDouble("stagger-ms", "", &stagger_ms, 0, 60000, "start of stream i is i x this after the first's");
  flags.AddString("paths", "", &paths, "which paths to run: worker,gateway (one alone: to profile it)");
  flags.AddDouble("wait-seconds", "", &wait_seconds, 0, 3600, "retry until the stack answers, up to this long");
  phi::common::ParseFlagsOrExit(flags, argc, argv);

  auto gw = phi::v1::ChatService::NewStub(grpc::CreateCustomChannel(gateway, grpc::InsecureChannelCredentials(), Args()));
  auto wk = phi::v1::WorkerService::NewStub(grpc::CreateCustomChannel(worker, grpc::InsecureChannelCredentials(), Args()));
  auto tk = phi::v1::TokenizerService::NewStub(grpc::CreateChannel(tokenizer, grpc::InsecureChannelCredentials()));
  phi::v1::EncodeRequest er;
  er.add_prompts()->set_text(prompt);
  er.set_parse_special_tokens(true);
  phi::v1::EncodeResponse eresp;
  auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_seconds));
  while (true) {
    grpc::ClientContext ectx;
    grpc::Status s = tk->Encode(&ectx, er, &eresp);
    // The stack is up once the gateway can answer a short request too.
    if (s.ok() && GatewayAnswers(gw.get(), prompt)) break;
    if (Clock::now() > give_up) {
      std::fprintf(stderr, "tokenizer %s / gateway %s not answering: %s\n", tokenizer.c_str(), gateway.c_str(),
                   s.error_message().c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }

  phi::v1::GenerateRequest wreq;
  wreq.mutable_prompt_ids()->CopyFrom(eresp.encodings(0).ids());
  wreq.mutable_stopping()->set_max_new_tokens(static_cast<int32_t>(tokens));
  wreq.mutable_stopping()->set_ignore_eos(true);
  Streams<phi::v1::GenerateResponse> via_worker(
      [&](grpc::ClientContext* ctx, grpc::ClientReadReactor<phi::v1::GenerateResponse>* r) {
        wk->async()->Generate(ctx, &wreq, r);
      },
      [](const phi::v1::GenerateResponse& m, int*) { return m.token_ids_size(); });
  phi::v1::CompleteRequest greq;
  greq.set_prompt(prompt);
  greq.mutable_stopping()->set_max_new_tokens(static_cast<int32_t>(tokens));
  greq.mutable_stopping()->set_ignore_eos(true);
  Streams<phi::v1::CompleteStreamResponse> via_gateway(
      [&](grpc::ClientContext* ctx, grpc::ClientReadReactor<phi::v1::CompleteStreamResponse>* r) {
        gw->async()->CompleteStream(ctx, &greq, r);
      },
      // Text messages count as one token each until the last message gives the total (the
      // gateway may merge tokens that arrive while it writes).
      [](const phi::v1::CompleteStreamResponse& m, int* total) {
        if (m.finish_reason() != phi::v1::FINISH_REASON_UNSPECIFIED) *total = m.usage().completion_tokens();
        return m.text_delta().empty() ? 0 : 1;
      });
  via_worker.Run(1, static_cast<int>(warmup));
  via_gateway.Run(1, static_cast<int>(warmup));

  std::printf("prompt %d tokens, %lld generated per request, %lld requests per stream, streams %.1f ms apart, "
              "median of %lld rounds (worker and gateway alternate)\n\n",
              eresp.encodings(0).ids_size(), static_cast<long long>(tokens), static_cast<long long>(requests),
              stagger_ms, static_cast<long long>(rounds));
  std::printf(
      "| streams | path | TTFT p50 ms | TTFT p99 ms | per-token p50 ms | per-token p99 ms | tokens/s | tokens/message "
      "| failed |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (absl::string_view sv : absl::StrSplit(streams_list, ',', absl::SkipEmpty())) {
    int streams = 0;
    if (!absl::SimpleAtoi(sv, &streams) || streams < 1) {
      std::fprintf(stderr, "--streams: '%s' is not a positive integer\n", std::string(sv).c_str());
      return 2;
    }
    std::vector<Row> ws, gs;
    const auto stagger = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(stagger_ms));
    const bool run_worker = absl::StrContains(paths, "worker"), run_gateway = absl::StrContains(paths, "gateway");
    for (int64_t r = 0; r < rounds; ++r) {
      if (run_worker) ws.push_back(via_worker.Run(streams, static_cast<int>(requests), stagger));
      if (run_gateway) gs.push_back(via_gateway.Run(streams, static_cast<int>(requests), stagger));
    }
    if (ws.empty()) ws.push_back({});
    if (gs.empty()) gs.push_back({});
    const Row w = Median(ws), g = Median(gs);
    for (auto [name, r] : {std::pair<const char*, Row>{"worker", w}, {"gateway", g}}) {
      std::printf("| %d | %s | %.2f | %.2f | %.3f | %.3f | %.0f | %.2f | %d |\n", streams, name, r.ttft50 * 1e3,
                  r.ttft99 * 1e3, r.tok50 * 1e3, r.tok99 * 1e3, r.tps, r.tokens_per_message, r.failed);
    }
    std::printf("| %d | gateway - worker | %+.2f | %+.2f | %+.3f | %+.3f | %+.1f%% | | |\n", streams,
                (g.ttft50 - w.ttft50) * 1e3, (g.ttft99 - w.ttft99) * 1e3, (g.tok50 - w.tok50) * 1e3,
                (g.tok99 - w.tok99) * 1e3, w.tps > 0 ? 100.0 * (g.tps - w.tps) / w.tps : 0.0);
  }
  return 0;
}
