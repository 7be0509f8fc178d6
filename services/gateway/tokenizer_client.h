// Client of phi.v1.TokenizerService with failover: calls go to the tokenizers
// round-robin, and a call that finds one UNAVAILABLE moves on to the next.
// Incremental decoding survives a tokenizer dying mid-stream: the session
// replays the ids so far on another one and returns only text not yet emitted.
#ifndef PHI_SERVICES_GATEWAY_TOKENIZER_CLIENT_H_
#define PHI_SERVICES_GATEWAY_TOKENIZER_CLIENT_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "phi/v1/tokenizer.grpc.pb.h"
#include "services/tokenizer/stream_decoder.h"
#include "services/tokenizer/tokenizer.h"

namespace phi::gateway {

using Deadline = std::chrono::system_clock::time_point;

class TokenizerClient;

// One request's incremental decode (DecodeStream). Not thread-safe.
class DecodeSession {
 public:
  ~DecodeSession();
  // Sends the next ids; returns the text they complete.
  absl::StatusOr<std::string> Push(const std::vector<int32_t>& ids);
  // Closes the stream; returns the text still pending (an incomplete
  // character becomes U+FFFD).
  absl::StatusOr<std::string> Finish();
  // Stops the stream without reading the rest (the request ended early).
  void Abort();

 private:
  friend class TokenizerClient;
  DecodeSession(TokenizerClient* client, bool skip_special, Deadline deadline)
      : client_(client), skip_special_(skip_special), deadline_(deadline) {}
  absl::Status Open(size_t index, bool replay);
  absl::StatusOr<std::string> Exchange(const std::vector<int32_t>& ids, bool first);

  TokenizerClient* client_;
  std::unique_ptr<phi::tokenizer::StreamDecoder> local_;  // set: decode in-process
  bool skip_special_;
  Deadline deadline_;
  size_t index_ = 0;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<phi::v1::DecodeStreamRequest, phi::v1::DecodeStreamResponse>> stream_;
  std::vector<int32_t> all_ids_;
  size_t emitted_bytes_ = 0;  // text returned to the caller so far
  bool sent_first_ = false;
};

class TokenizerClient {
 public:
  // `addresses`: host:port list (at least one).
  static absl::StatusOr<std::unique_ptr<TokenizerClient>> Create(const std::vector<std::string>& addresses);

  // Encodes one prompt. parse_special: special-token strings in Prompt.text
  // become special ids.
  absl::StatusOr<std::vector<int32_t>> Encode(const phi::v1::Prompt& prompt, bool parse_special, Deadline deadline);
  // Text of a whole id sequence.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids, bool skip_special, Deadline deadline);
  // Text of each id alone (logprob entries, token strings), in order. Each distinct id is
  // decoded once, in Decode calls of at most the service's max batch (from Info): any number
  // of ids, a few RPCs. Ids at or past the tokenizer's vocabulary (a model's padded output
  // rows) are ""; a negative id is INVALID_ARGUMENT.
  absl::StatusOr<std::vector<std::string>> DecodeEach(const std::vector<int32_t>& ids, Deadline deadline);
  absl::StatusOr<phi::v1::InfoResponse> Info(Deadline deadline);
  std::unique_ptr<DecodeSession> StartDecode(bool skip_special, Deadline deadline);

  const std::vector<std::string>& addresses() const { return addresses_; }
  // phi-tokenizer's default --max-batch, for a service whose Info does not report its own.
  static constexpr int32_t kDefaultMaxBatch = 256;

  // Optional fast path: the same tokenizer files loaded in-process (a model
  // folder or tokenizer.json). Decoding (streams, Decode, DecodeEach) then costs
  // no RPC; with `encode` Encode runs in-process too (no RPC at all per
  // request). `flag` names the option in errors. Call before serving.
  absl::Status LoadLocal(const std::string& path, bool encode, const std::string& flag);
  absl::Status LoadLocalDecoder(const std::string& path) { return LoadLocal(path, false, "--local-decode"); }
  bool local_decode() const { return local_ != nullptr; }
  bool local_encode() const { return local_encode_; }

 private:
  friend class DecodeSession;
  TokenizerClient() = default;
  // Runs `call` on tokenizer i = start, start+1, ... until one does not answer
  // UNAVAILABLE; the last status wins.
  template <typename Fn>
  grpc::Status WithFailover(Fn&& call);
  size_t NextStart() { return rr_.fetch_add(1, std::memory_order_relaxed) % stubs_.size(); }
  // "tokenizer 2: <message without addresses>" for clients (2: its place in --tokenizer), and a
  // log line with the address and gRPC's own message.
  std::string ClientError(size_t index, const grpc::Status& status) const;
  // The vocabulary size and the most sequences per Decode, from Info on first use (the
  // tokenizers behind one gateway serve the same files with the same flags).
  absl::Status LearnLimits(Deadline deadline);
  // Texts of distinct ids in [0, vocabulary), in order.
  absl::StatusOr<std::vector<std::string>> DecodeDistinct(const std::vector<int32_t>& ids, Deadline deadline);

  std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<phi::v1::TokenizerService::Stub>> stubs_;
  std::atomic<size_t> rr_{0};
  // Decode sessions rotate on their own: sharing rr_ with Encode (one of each per
  // request) would pin every session to the same tokenizer when there are two.
  std::atomic<size_t> decode_rr_{0};
  std::unique_ptr<phi::tokenizer::Tokenizer> local_;
  bool local_encode_ = false;
  // Learned by LearnLimits; vocab_size_ < 0 until then (max_batch_ is stored first).
  std::atomic<int32_t> vocab_size_{-1};
  std::atomic<int32_t> max_batch_{kDefaultMaxBatch};
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_TOKENIZER_CLIENT_H_
