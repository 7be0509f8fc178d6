// What the gateway adds: time to first token and per-token latency of the same
// generation sent through phi-gateway (CompleteStream: encode, route, decode,
// stream) and straight to phi-worker (Generate on the prompt's ids), at several
// numbers of concurrent streams. Prints a Markdown table.
//
//   gateway_overhead_bench --gateway 127.0.0.1:50051 --worker 127.0.0.1:50053
//       --tokenizer 127.0.0.1:50052 [--streams 1,64] [--requests 8] [--tokens 64]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

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

Sample ViaGateway(phi::v1::ChatService::Stub* stub, const std::string& prompt, int tokens) {
  phi::v1::CompleteRequest req;
  req.set_prompt(prompt);
  req.mutable_stopping()->set_max_new_tokens(tokens);
  req.mutable_stopping()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  Sample s;
  auto t0 = Clock::now();
  Clock::time_point first, last;
  auto reader = stub->CompleteStream(&ctx, req);
  phi::v1::CompleteStreamResponse m;
  bool got = false;
  while (reader->Read(&m)) {
    if (!m.text_delta().empty()) {
      last = Clock::now();
      if (!got) first = last;
      got = true;
    }
    if (m.finish_reason() != phi::v1::FINISH_REASON_UNSPECIFIED) s.tokens = m.usage().completion_tokens();
  }
  s.ok = reader->Finish().ok() && got;
  s.ttft = Seconds(first - t0);
  s.per_token = s.tokens > 1 ? Seconds(last - first) / (s.tokens - 1) : 0;
  return s;
}

Sample ViaWorker(phi::v1::WorkerService::Stub* stub, const std::vector<int32_t>& ids, int tokens) {
  phi::v1::GenerateRequest req;
  req.mutable_prompt_ids()->Add(ids.begin(), ids.end());
  req.mutable_stopping()->set_max_new_tokens(tokens);
  req.mutable_stopping()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  Sample s;
  auto t0 = Clock::now();
  Clock::time_point first, last;
  auto reader = stub->Generate(&ctx, req);
  phi::v1::GenerateResponse m;
  while (reader->Read(&m)) {
    if (m.token_ids_size() > 0) {
      last = Clock::now();
      if (s.tokens == 0) first = last;
      s.tokens += m.token_ids_size();
    }
  }
  s.ok = reader->Finish().ok() && s.tokens > 0;
  s.ttft = Seconds(first - t0);
  s.per_token = s.tokens > 1 ? Seconds(last - first) / (s.tokens - 1) : 0;
  return s;
}

struct Row {
  double ttft50, ttft99, tok50, tok99, tps;
  int failed;
};

template <typename Fn>
Row Run(int streams, int requests, Fn one) {
  std::vector<Sample> samples;
  std::mutex mu;
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < streams; ++t) {
    threads.emplace_back([&] {
      for (int r = 0; r < requests; ++r) {
        Sample s = one();
        std::lock_guard<std::mutex> l(mu);
        samples.push_back(s);
      }
    });
  }
  for (auto& t : threads) t.join();
  double wall = Seconds(Clock::now() - t0);
  std::vector<double> ttft, tok;
  int64_t total = 0;
  int failed = 0;
  for (const auto& s : samples) {
    if (!s.ok) {
      ++failed;
      continue;
    }
    ttft.push_back(s.ttft);
    tok.push_back(s.per_token);
    total += s.tokens;
  }
  return {Percentile(ttft, 0.5), Percentile(ttft, 0.99), Percentile(tok, 0.5), Percentile(tok, 0.99), total / wall,
          failed};
}

}  // namespace

int main(int argc, char** argv) {
  std::string gateway = "127.0.0.1:50051", worker = "127.0.0.1:50053", tokenizer = "127.0.0.1:50052";
  std::string streams_list = "1,64";
  std::string prompt =
      "Write a short story about a robot who learns to paint, in the style of a fairy tale, "
      "with a happy ending and a moral at the end.";
  int64_t requests = 8, tokens = 64, warmup = 2;
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
    // The stack is up once the gateway can answer a one-token request too.
    if (s.ok() && ViaGateway(gw.get(), prompt, 2).ok) break;
    if (Clock::now() > give_up) {
      std::fprintf(stderr, "tokenizer %s / gateway %s not answering: %s\n", tokenizer.c_str(), gateway.c_str(),
                   s.error_message().c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::vector<int32_t> ids(eresp.encodings(0).ids().begin(), eresp.encodings(0).ids().end());
  for (int i = 0; i < warmup; ++i) {
    ViaWorker(wk.get(), ids, static_cast<int>(tokens));
    ViaGateway(gw.get(), prompt, static_cast<int>(tokens));
  }
  std::printf("prompt %zu tokens, %lld generated per request, %lld requests per stream\n\n", ids.size(),
              static_cast<long long>(tokens), static_cast<long long>(requests));
  std::printf("| streams | path | TTFT p50 ms | TTFT p99 ms | per-token p50 ms | per-token p99 ms | tokens/s | failed |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (absl::string_view sv : absl::StrSplit(streams_list, ',', absl::SkipEmpty())) {
    int streams = 0;
    if (!absl::SimpleAtoi(sv, &streams) || streams < 1) {
      std::fprintf(stderr, "--streams: '%s' is not a positive integer\n", std::string(sv).c_str());
      return 2;
    }
    Row w = Run(streams, static_cast<int>(requests), [&] { return ViaWorker(wk.get(), ids, static_cast<int>(tokens)); });
    Row g = Run(streams, static_cast<int>(requests), [&] { return ViaGateway(gw.get(), prompt, static_cast<int>(tokens)); });
    for (auto [name, r] : {std::pair<const char*, Row>{"worker", w}, {"gateway", g}}) {
      std::printf("| %d | %s | %.2f | %.2f | %.3f | %.3f | %.0f | %d |\n", streams, name, r.ttft50 * 1e3,
                  r.ttft99 * 1e3, r.tok50 * 1e3, r.tok99 * 1e3, r.tps, r.failed);
    }
    std::printf("| %d | gateway - worker | %+.2f | %+.2f | %+.3f | %+.3f | %+.1f%% | |\n", streams,
                (g.ttft50 - w.ttft50) * 1e3, (g.ttft99 - w.ttft99) * 1e3, (g.tok50 - w.tok50) * 1e3,
                (g.tok99 - w.tok99) * 1e3, w.tps > 0 ? 100.0 * (g.tps - w.tps) / w.tps : 0.0);
  }
  return 0;
}
