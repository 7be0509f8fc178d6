// phi.v1.TokenizerService over phi::tokenizer: Encode, Decode, DecodeStream, Info.
#ifndef PHI_SERVICES_TOKENIZER_SERVICE_TOKENIZER_SERVICE_H_
#define PHI_SERVICES_TOKENIZER_SERVICE_TOKENIZER_SERVICE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "phi/v1/tokenizer.grpc.pb.h"
#include "services/common/metrics/registry.h"
#include "services/tokenizer/tokenizer.h"

namespace phi::tokenizer {

struct ServiceOptions {
  // Total UTF-8 bytes of text in one Encode request; more is INVALID_ARGUMENT.
  int64_t max_text_bytes = 4 << 20;
  // Prompts per Encode and sequences per Decode.
  int64_t max_batch = 256;
  // Ids in one Decode request or one DecodeStream message.
  int64_t max_ids = 1 << 20;
};

// The largest request message these limits let through, the service's default gRPC receive
// limit (--max-receive-message-bytes 0): an Encode of max_text_bytes of text in max_batch
// prompts, or a Decode of max_ids ids (at most 5 bytes each on the wire), plus framing. gRPC
// refuses a larger message with RESOURCE_EXHAUSTED before the service parses it, so a request
// far over --max-text-bytes costs no memory in proportion to its size.
int64_t MaxRequestBytes(const ServiceOptions& options);

// DecodeStream, the per-token path, is on gRPC's callback API (a message is decoded and answered
// on the thread that read it: no thread hand-off per token); the batch calls stay synchronous,
// so a long Encode runs on a thread of its own and never holds up the streams.
class TokenizerServiceImpl final
    : public phi::v1::TokenizerService::WithCallbackMethod_DecodeStream<phi::v1::TokenizerService::Service> {
 public:
  TokenizerServiceImpl(std::shared_ptr<const Tokenizer> tokenizer, ServiceOptions options,
                       metrics::Registry* registry);

  grpc::Status Encode(grpc::ServerContext* context, const phi::v1::EncodeRequest* request,
                      phi::v1::EncodeResponse* response) override;
  grpc::Status Decode(grpc::ServerContext* context, const phi::v1::DecodeRequest* request,
                      phi::v1::DecodeResponse* response) override;
  grpc::ServerBidiReactor<phi::v1::DecodeStreamRequest, phi::v1::DecodeStreamResponse>* DecodeStream(
      grpc::CallbackServerContext* context) override;
  grpc::Status Info(grpc::ServerContext* context, const phi::v1::InfoRequest* request,
                    phi::v1::InfoResponse* response) override;

  // The transport-free cores, for tests.
  absl::Status DoEncode(const phi::v1::EncodeRequest& request, phi::v1::EncodeResponse* response);
  absl::Status DoDecode(const phi::v1::DecodeRequest& request, phi::v1::DecodeResponse* response);

 private:
  class DecodeStreamCall;

  std::shared_ptr<const Tokenizer> tokenizer_;
  ServiceOptions options_;
  metrics::Counter* tokens_encode_;
  metrics::Counter* tokens_decode_;
  metrics::Counter* bytes_encode_;
  metrics::Counter* bytes_decode_;
};

// The phi-tokenizer program: flags, load the tokenizer (exit 1 naming the file and JSON location
// when it is missing or malformed), serve until SIGTERM.
int TokenizerMain(int argc, char** argv);

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_SERVICE_TOKENIZER_SERVICE_H_
