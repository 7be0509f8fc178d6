// In-process fakes of the tokenizer and worker services for gateway unit tests.
// Tokenizer: one id per byte (id = byte + 10), specials <|im_start|> = 1, <|im_end|> = 2.
// Worker: streams a fixed reply one token per message (or tokens_per_message), with knobs for
// failures and for replies that depend on the seed.
#ifndef PHI_TESTS_UNIT_GATEWAY_FAKES_H_
#define PHI_TESTS_UNIT_GATEWAY_FAKES_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "phi/v1/tokenizer.grpc.pb.h"
#include "phi/v1/worker.grpc.pb.h"

namespace phi::gateway::testing {

inline int32_t ByteId(unsigned char c) { return c + 10; }

class FakeTokenizer final : public phi::v1::TokenizerService::Service {
 public:
  grpc::Status Encode(grpc::ServerContext*, const phi::v1::EncodeRequest* req, phi::v1::EncodeResponse* resp) override {
    ++encodes;
    for (const auto& p : req->prompts()) {
      auto* e = resp->add_encodings();
      auto add_text = [&](const std::string& t) {
        for (unsigned char c : t) e->add_ids(ByteId(c));
      };
      if (p.has_segments()) {
        for (const auto& s : p.segments().segments()) {
          if (s.has_special_token()) {
            if (s.special_token() == "<|im_start|>") e->add_ids(1);
            else if (s.special_token() == "<|im_end|>") e->add_ids(2);
            else return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unknown special " + s.special_token());
          } else {
            add_text(s.text());
          }
        }
      } else {
        add_text(p.text());
      }
    }
    return grpc::Status::OK;
  }
  static std::string Text(int32_t id) {
    if (id == 1) return "<|im_start|>";
    if (id == 2) return "<|im_end|>";
    return std::string(1, static_cast<char>(id - 10));
  }
  grpc::Status Decode(grpc::ServerContext*, const phi::v1::DecodeRequest* req, phi::v1::DecodeResponse* resp) override {
    ++decodes;
    const int n = req->sequences_size();
    if (n > max_batch) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "sequences: " + std::to_string(n) + " given, 1.." + std::to_string(max_batch) + " allowed");
    }
    for (int most = most_sequences; n > most && !most_sequences.compare_exchange_weak(most, n);) {
    }
    for (const auto& s : req->sequences()) {
      std::string t;
      for (int32_t id : s.ids()) {
        if (id < 0 || id >= kVocab) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "token id " + std::to_string(id) + " is outside the vocabulary");
        }
        t += Text(id);
      }
      resp->add_texts(t);
    }
    return grpc::Status::OK;
  }
  grpc::Status DecodeStream(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<phi::v1::DecodeStreamResponse, phi::v1::DecodeStreamRequest>* stream) override {
    phi::v1::DecodeStreamRequest req;
    bool skip = false, first = true;
    int messages = 0;
    ++decode_streams;
    while (stream->Read(&req)) {
      if (fail_decode_after > 0 && ++messages > fail_decode_after) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake tokenizer dying");
      }
      if (first) skip = req.skip_special_tokens();
      first = false;
      phi::v1::DecodeStreamResponse r;
      for (int32_t id : req.ids()) {
        if (skip && id < 10) continue;
        r.mutable_text_delta()->append(Text(id));
      }
      if (!stream->Write(r)) break;
    }
    return grpc::Status::OK;
  }
  grpc::Status Info(grpc::ServerContext*, const phi::v1::InfoRequest*, phi::v1::InfoResponse* r) override {
    ++infos;
    r->set_vocab_size(kVocab);
    if (report_max_batch) r->set_max_batch(max_batch);
    return grpc::Status::OK;
  }
  static constexpr int32_t kVocab = 300;
  // Decode refuses more sequences than this, as phi-tokenizer's --max-batch; Info reports it
  // unless report_max_batch is false (a service older than the field).
  std::atomic<int> max_batch{256};
  std::atomic<bool> report_max_batch{true};
  std::atomic<int> decodes{0};
  std::atomic<int> infos{0};
  std::atomic<int> most_sequences{0};  // in one Decode
  std::atomic<int> encodes{0};
  // > 0: DecodeStream fails UNAVAILABLE on message fail_decode_after + 1.
  std::atomic<int> fail_decode_after{0};
  std::atomic<int> decode_streams{0};
};

class FakeWorker final : public phi::v1::WorkerService::Service {
 public:
  // kHang: Generate sends nothing until the call is cancelled (a wedged engine).
  enum class Mode { kOk, kUnavailable, kFailAfterFirst, kHang };
  std::string reply = "hello world STOP more text";
  std::atomic<Mode> mode{Mode::kOk};
  std::atomic<int> token_delay_ms{1};
  std::atomic<int> generates{0};
  std::atomic<int> running{0};
  std::atomic<int> cancelled{0};
  std::atomic<int64_t> last_deadline_ms{-1};  // remaining time seen at arrival, -1: none
  std::atomic<int> status_delay_ms{0};        // GetStatus answers this late (or when cancelled)
  std::string last_model = "fake-model";
  std::vector<uint64_t> cached_hashes;  // reported in GetStatus (prefix-aware routing)
  // Reported in GetStatus when set (a model's generation_config.json defaults); guarded by mu.
  std::optional<phi::v1::GetStatusResponse::GenerationDefaults> generation_defaults;
  std::atomic<int> tokens_per_message{1};
  // The reply ends with the digit seed % 10 and each token's logprob is -0.1 * (seed % 5 + 1):
  // choices with different seeds differ in text and in cumulative logprob.
  std::atomic<bool> seeded_reply{false};
  // A request with this seed is refused as a bad constraint (INVALID_ARGUMENT) at once.
  std::atomic<int64_t> refuse_seed{-1};
  phi::v1::GenerateRequest last_request;
  std::mutex mu;
  // LoRA adapters registered here (GetStatus lists them; guarded by mu). LoadAdapter refuses a
  // path that does not start with '/' as a missing folder (NOT_FOUND), and every load with
  // refuse_load_code when it is not OK. A request for an adapter gets "<adapter>:" + reply.
  std::vector<phi::v1::AdapterInfo> adapters;
  std::atomic<grpc::StatusCode> refuse_load_code{grpc::StatusCode::OK};
  std::atomic<int> loads{0};
  std::atomic<int> unloads{0};

  void AddAdapter(const std::string& name, const std::string& path = "/adapters/x") {
    std::lock_guard<std::mutex> l(mu);
    phi::v1::AdapterInfo a;
    a.set_name(name);
    a.set_path(path);
    a.set_rank(8);
    adapters.push_back(a);
  }
  bool HasAdapter(const std::string& name) {
    std::lock_guard<std::mutex> l(mu);
    return std::any_of(adapters.begin(), adapters.end(), [&](const auto& a) { return a.name() == name; });
  }
  grpc::Status LoadAdapter(grpc::ServerContext*, const phi::v1::LoadAdapterRequest* req,
                           phi::v1::LoadAdapterResponse* resp) override {
    ++loads;
    if (refuse_load_code != grpc::StatusCode::OK) return grpc::Status(refuse_load_code, "fake worker refuses the load");
    if (req->path().empty() || req->path()[0] != '/') {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "path: no folder " + req->path());
    }
    if (HasAdapter(req->name())) return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "name: taken");
    AddAdapter(req->name(), req->path());
    resp->mutable_adapter()->set_name(req->name());
    resp->mutable_adapter()->set_path(req->path());
    return grpc::Status::OK;
  }
  grpc::Status UnloadAdapter(grpc::ServerContext*, const phi::v1::UnloadAdapterRequest* req,
                             phi::v1::UnloadAdapterResponse*) override {
    ++unloads;
    std::lock_guard<std::mutex> l(mu);
    auto it = std::find_if(adapters.begin(), adapters.end(), [&](const auto& a) { return a.name() == req->name(); });
    if (it == adapters.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no adapter " + req->name());
    adapters.erase(it);
    return grpc::Status::OK;
  }

  grpc::Status Generate(grpc::ServerContext* ctx, const phi::v1::GenerateRequest* req,
                        grpc::ServerWriter<phi::v1::GenerateResponse>* w) override {
    ++generates;
    {
      std::lock_guard<std::mutex> l(mu);
      last_request = *req;
    }
    auto left = ctx->deadline() - std::chrono::system_clock::now();
    last_deadline_ms = left > std::chrono::hours(1) ? -1
                                                    : std::chrono::duration_cast<std::chrono::milliseconds>(left).count();
    if (mode == Mode::kUnavailable) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake worker down");
    const uint64_t seed = req->sampling().has_seed() ? req->sampling().seed() : 7;
    if (refuse_seed >= 0 && seed == static_cast<uint64_t>(refuse_seed.load())) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sampling.constraint.json_schema: bad at offset 17");
    }
    if (!req->adapter().empty() && !HasAdapter(req->adapter())) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "adapter: no adapter " + req->adapter());
    }
    const std::string base_text = req->adapter().empty() ? reply : req->adapter() + ":" + reply;
    const std::string text = seeded_reply ? base_text + static_cast<char>('0' + seed % 10) : base_text;
    const float token_logprob = seeded_reply ? -0.1f * static_cast<float>(seed % 5 + 1) : -0.5f;
    if (mode == Mode::kHang) {
      while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      ++cancelled;
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while hung");
    }
    ++running;
    struct Dec {
      std::atomic<int>* r;
      ~Dec() { --*r; }
    } dec{&running};
    const int n = std::min<int>(static_cast<int>(text.size()), req->stopping().max_new_tokens());
    const int per_message = std::max(1, tokens_per_message.load());
    for (int i = 0; i < n; i += per_message) {
      if (ctx->IsCancelled()) {
        ++cancelled;
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
      if (i > 0 && mode == Mode::kFailAfterFirst) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "rank died");
      std::this_thread::sleep_for(std::chrono::milliseconds(token_delay_ms.load()));
      phi::v1::GenerateResponse r;
      for (int k = i; k < std::min(n, i + per_message); ++k) {
        r.add_token_ids(ByteId(static_cast<unsigned char>(text[k])));
        if (req->logprobs()) {
          auto* lp = r.add_logprobs();
          lp->mutable_token()->set_token_id(r.token_ids(k - i));
          lp->mutable_token()->set_logprob(token_logprob);
        }
      }
      if (i == 0 && req->prompt_logprobs()) {
        for (int k = 1; k < req->prompt_ids_size(); ++k) {
          auto* lp = r.add_prompt_logprobs();
          lp->mutable_token()->set_token_id(req->prompt_ids(k));
          lp->mutable_token()->set_logprob(-1.0f);
          // Alternatives: a padded output row (past the tokenizer's 300 ids), then letters.
          for (int j = 0; j < req->top_logprobs(); ++j) {
            auto* t = lp->add_top();
            t->set_token_id(j == 0 ? 300 + k % 7 : ByteId(static_cast<unsigned char>('a' + (k + j) % 26)));
            t->set_logprob(-1.0f - j);
          }
        }
      }
      if (i + per_message >= n) {
        r.set_finish_reason(n == static_cast<int>(text.size()) ? phi::v1::FINISH_REASON_STOP
                                                               : phi::v1::FINISH_REASON_LENGTH);
        r.mutable_usage()->set_prompt_tokens(req->prompt_ids_size());
        r.mutable_usage()->set_completion_tokens(n);
        r.set_seed(seed);
      }
      if (!w->Write(r)) {
        ++cancelled;
        return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
      }
    }
    return grpc::Status::OK;
  }
  grpc::Status GetStatus(grpc::ServerContext* ctx, const phi::v1::GetStatusRequest*,
                         phi::v1::GetStatusResponse* r) override {
    for (int waited = 0; waited < status_delay_ms && !ctx->IsCancelled(); waited += 2) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    r->set_ready(true);
    r->set_running(running);
    r->set_model(last_model);
    r->set_max_context_tokens(256);
    r->set_vocab_size(300);
    r->set_kv_block_size(16);
    r->set_kv_blocks_total(100);
    r->set_kv_blocks_free(100);
    std::lock_guard<std::mutex> l(mu);
    r->mutable_cached_block_hashes()->Add(cached_hashes.begin(), cached_hashes.end());
    if (generation_defaults) *r->mutable_generation_defaults() = *generation_defaults;
    r->mutable_adapters()->Add(adapters.begin(), adapters.end());
    r->set_max_adapter_slots(4);
    return grpc::Status::OK;
  }
};

// A grpc server on a free loopback port hosting one service.
struct InProcessServer {
  explicit InProcessServer(grpc::Service* service) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(service);
    server = b.BuildAndStart();
  }
  ~InProcessServer() { server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200)); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

}  // namespace phi::gateway::testing

#endif  // PHI_TESTS_UNIT_GATEWAY_FAKES_H_
