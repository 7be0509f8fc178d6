#include "services/tokenizer/service/tokenizer_service.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/common/config.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/common/server.h"
#include "services/common/status_macros.h"
#include "services/tokenizer/stream_decoder.h"
#include "services/tokenizer/tokenizer_loader.h"

namespace phi::tokenizer {
namespace {

// Proto ids are int32: a negative one can never be a token.
absl::Status ToIds(const google::protobuf::RepeatedField<int32_t>& in, const std::string& where,
                   std::vector<uint32_t>* out) {
  out->clear();
  out->reserve(in.size());
  for (int i = 0; i < in.size(); ++i) {
    if (in[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": token id ", in[i], " at position ", i, " is negative"));
    }
    out->push_back(static_cast<uint32_t>(in[i]));
  }
  return absl::OkStatus();
}

absl::Status Prefixed(const absl::Status& s, const std::string& where) {
  return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
}

void CopyEncoding(const Encoding& e, phi::v1::Encoding* out) {
  out->mutable_ids()->Reserve(static_cast<int>(e.ids.size()));
  for (uint32_t id : e.ids) out->add_ids(static_cast<int32_t>(id));
  if (!e.offsets.empty()) {
    out->mutable_offsets()->Reserve(static_cast<int>(2 * e.offsets.size()));
    for (const auto& [b, end] : e.offsets) {
      out->add_offsets(static_cast<int32_t>(b));
      out->add_offsets(static_cast<int32_t>(end));
    }
  }
}

}  // namespace

TokenizerServiceImpl::TokenizerServiceImpl(std::shared_ptr<const Tokenizer> tokenizer,
                                           ServiceOptions options, metrics::Registry* registry)
    : tokenizer_(std::move(tokenizer)), options_(options) {
  auto& tokens = registry->AddCounter("phi_tokenizer_tokens_total",
                                      "Tokens produced by encode or consumed by decode.", {"direction"});
  auto& bytes = registry->AddCounter("phi_tokenizer_bytes_total",
                                     "UTF-8 bytes consumed by encode or produced by decode.", {"direction"});
  // Children are looked up once: Inc on the hot path takes no lock.
  tokens_encode_ = &tokens.WithLabels({"encode"});
  tokens_decode_ = &tokens.WithLabels({"decode"});
  bytes_encode_ = &bytes.WithLabels({"encode"});
  bytes_decode_ = &bytes.WithLabels({"decode"});
}

absl::Status TokenizerServiceImpl::DoEncode(const phi::v1::EncodeRequest& request,
                                            phi::v1::EncodeResponse* response) {
  const int n = request.prompts_size();
  if (n < 1 || n > options_.max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompts: ", n, " given, 1..", options_.max_batch, " allowed"));
  }
  int64_t total = 0;
  for (const auto& p : request.prompts()) {
    if (p.has_segments()) {
      for (const auto& s : p.segments().segments()) total += s.text().size() + s.special_token().size();
    } else {
      total += p.text().size();
    }
  }
  if (total > options_.max_text_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("prompts: ", total, " bytes of text, at most ",
                                                   options_.max_text_bytes, " (--max-text-bytes)"));
  }
  EncodeOptions opts{.parse_special = request.parse_special_tokens(), .offsets = request.return_offsets()};
  uint64_t tokens = 0;
  for (int i = 0; i < n; ++i) {
    const phi::v1::Prompt& p = request.prompts(i);
    const std::string where = absl::StrCat("prompts[", i, "]");
    Encoding enc;
    if (p.kind_case() == phi::v1::Prompt::kSegments) {
      std::vector<Segment> segs;
      segs.reserve(p.segments().segments_size());
      for (int j = 0; j < p.segments().segments_size(); ++j) {
        const phi::v1::Segment& s = p.segments().segments(j);
        switch (s.kind_case()) {
          case phi::v1::Segment::kText:
            segs.push_back(Segment::Text(s.text()));
            break;
          case phi::v1::Segment::kSpecialToken:
            segs.push_back(Segment::Special(s.special_token()));
            break;
          default:
            return absl::InvalidArgumentError(
                absl::StrCat(where, ".segments[", j, "]: set text or special_token"));
        }
      }
      auto r = tokenizer_->EncodeSegments(segs, opts.offsets);
      if (!r.ok()) return Prefixed(r.status(), where);
      enc = std::move(*r);
    } else if (absl::Status s = tokenizer_->EncodeAppend(p.text(), opts, &enc); !s.ok()) {
      return Prefixed(s, where);
    }
    tokens += enc.ids.size();
    CopyEncoding(enc, response->add_encodings());
  }
  tokens_encode_->Inc(static_cast<double>(tokens));
  bytes_encode_->Inc(static_cast<double>(total));
  return absl::OkStatus();
}

absl::Status TokenizerServiceImpl::DoDecode(const phi::v1::DecodeRequest& request,
                                            phi::v1::DecodeResponse* response) {
  const int n = request.sequences_size();
  if (n < 1 || n > options_.max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequences: ", n, " given, 1..", options_.max_batch, " allowed"));
  }
  std::vector<uint32_t> ids;
  uint64_t tokens = 0, bytes = 0;
  for (int i = 0; i < n; ++i) {
    const std::string where = absl::StrCat("sequences[", i, "]");
    const auto& seq = request.sequences(i).ids();
    if (seq.size() > options_.max_ids) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", seq.size(), " ids, at most ", options_.max_ids));
    }
    PHI_RETURN_IF_ERROR(ToIds(seq, where, &ids));
    auto text = tokenizer_->Decode(ids, request.skip_special_tokens());
    if (!text.ok()) return Prefixed(text.status(), where);
    tokens += ids.size();
    bytes += text->size();
    response->add_texts(std::move(*text));
  }
  tokens_decode_->Inc(static_cast<double>(tokens));
  bytes_decode_->Inc(static_cast<double>(bytes));
  return absl::OkStatus();
}

grpc::Status TokenizerServiceImpl::Encode(grpc::ServerContext*, const phi::v1::EncodeRequest* request,
                                          phi::v1::EncodeResponse* response) {
  return common::ToGrpcStatus(DoEncode(*request, response));
}

grpc::Status TokenizerServiceImpl::Decode(grpc::ServerContext*, const phi::v1::DecodeRequest* request,
                                          phi::v1::DecodeResponse* response) {
  return common::ToGrpcStatus(DoDecode(*request, response));
}

// One response per request message (the gateway writes, then reads), then one flush response
// with what is left when the client closes its side. Reads and writes alternate, so at most
// one operation is outstanding and the reactions never overlap.
class TokenizerServiceImpl::DecodeStreamCall
    : public grpc::ServerBidiReactor<phi::v1::DecodeStreamRequest, phi::v1::DecodeStreamResponse> {
 public:
  explicit DecodeStreamCall(TokenizerServiceImpl* service) : service_(service) { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side (or went away): flush what is pending
      if (decoder_) {
        response_.clear_text_delta();
        decoder_->Finish(response_.mutable_text_delta());
        if (!response_.text_delta().empty()) {
          service_->bytes_decode_->Inc(static_cast<double>(response_.text_delta().size()));
          StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
          return;
        }
      }
      Finish(grpc::Status::OK);
      return;
    }
    if (!decoder_) {
      decoder_ = std::make_unique<StreamDecoder>(*service_->tokenizer_, request_.skip_special_tokens());
    }
    const std::string where = absl::StrCat("message ", message_++);
    if (request_.ids_size() > service_->options_.max_ids) {
      Finish(common::ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat(where, ": ", request_.ids_size(), " ids, at most ", service_->options_.max_ids))));
      return;
    }
    if (absl::Status s = ToIds(request_.ids(), where, &ids_); !s.ok()) return Finish(common::ToGrpcStatus(s));
    response_.clear_text_delta();
    if (absl::Status s = decoder_->Push(ids_, response_.mutable_text_delta()); !s.ok()) {
      return Finish(common::ToGrpcStatus(Prefixed(s, where)));
    }
    service_->tokens_decode_->Inc(static_cast<double>(ids_.size()));
    service_->bytes_decode_->Inc(static_cast<double>(response_.text_delta().size()));
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  TokenizerServiceImpl* service_;
  phi::v1::DecodeStreamRequest request_;
  phi::v1::DecodeStreamResponse response_;
  std::unique_ptr<StreamDecoder> decoder_;
  std::vector<uint32_t> ids_;
  size_t message_ = 0;
};

grpc::ServerBidiReactor<phi::v1::DecodeStreamRequest, phi::v1::DecodeStreamResponse>*
TokenizerServiceImpl::DecodeStream(grpc::CallbackServerContext*) {
  return new DecodeStreamCall(this);
}

grpc::Status TokenizerServiceImpl::Info(grpc::ServerContext*, const phi::v1::InfoRequest*,
                                        phi::v1::InfoResponse* response) {
  const Tokenizer& t = *tokenizer_;
  const SpecialRoles& r = t.roles();
  auto id_or = [](const std::optional<uint32_t>& id) { return id ? static_cast<int32_t>(*id) : -1; };
  response->set_vocab_size(static_cast<int32_t>(t.vocab_size()));
  for (uint32_t id : r.stop_ids) response->add_eos_token_ids(static_cast<int32_t>(id));
  response->set_bos_token_id(id_or(r.bos));
  response->set_pad_token_id(id_or(r.pad));
  response->set_im_start_token_id(id_or(r.im_start));
  response->set_im_end_token_id(id_or(r.im_end));
  response->set_max_batch(static_cast<int32_t>(options_.max_batch));
  for (const AddedToken& a : t.added_tokens()) {
    if (!a.special) continue;
    auto* s = response->add_special_tokens();
    s->set_name(a.content);
    s->set_id(static_cast<int32_t>(a.id));
  }
  return grpc::Status::OK;
}

int64_t MaxRequestBytes(const ServiceOptions& options) {
  // Framing: a prompt's message header and its segments' headers (a chat's few dozen), and
  // the request's own fields, with room to spare.
  constexpr int64_t kPerPromptFraming = 1 << 10;
  constexpr int64_t kRequestFraming = 64 << 10;
  constexpr int64_t kMaxBytesPerId = 5;  // a non-negative int32 varint
  const int64_t encode = options.max_text_bytes + options.max_batch * kPerPromptFraming;
  const int64_t decode = options.max_ids * kMaxBytesPerId;
  return std::min<int64_t>(std::max(encode, decode) + kRequestFraming, int64_t{1} << 30);
}

int TokenizerMain(int argc, char** argv) {
  common::DisableMutexDeadlockDetection();
  common::BlockTerminationSignals();
  common::ServerOptions server;
  server.service_name = "tokenizer";
  server.port = 50052;
  server.metrics_port = 9091;
  std::string model_dir, tokenizer_json;
  ServiceOptions options;
  common::FlagSet flags("phi-tokenizer", "Serves phi.v1.TokenizerService (byte-level BPE, Hugging Face-identical).");
  common::AddServerFlags(flags, &server);
  flags.AddString("model", "PHI_MODEL", &model_dir,
                  "model folder: tokenizer.json (or vocab.json + merges.txt + added_tokens.json) and "
                  "tokenizer_config.json / special_tokens_map.json / generation_config.json");
  flags.AddString("tokenizer-json", "PHI_TOKENIZER_JSON", &tokenizer_json,
                  "a tokenizer.json to use instead of the model folder's (roles still come from --model)");
  flags.AddInt("max-text-bytes", "PHI_MAX_TEXT_BYTES", &options.max_text_bytes, 1, int64_t{1} << 30,
               "UTF-8 bytes of text per Encode request");
  flags.AddInt("max-batch", "PHI_MAX_BATCH", &options.max_batch, 1, 1 << 16,
               "prompts per Encode, sequences per Decode");
  common::ParseFlagsOrExit(flags, argc, argv);
  common::InitLogging(server);
  if (server.max_receive_message_bytes == 0) server.max_receive_message_bytes = MaxRequestBytes(options);
  if (model_dir.empty() && tokenizer_json.empty()) {
    std::fprintf(stderr, "phi-tokenizer: set --model (PHI_MODEL) or --tokenizer-json\n");
    return 2;
  }

  absl::StatusOr<std::unique_ptr<Tokenizer>> loaded;
  if (!tokenizer_json.empty()) {
    loaded = LoadTokenizerJsonFile(tokenizer_json);
    if (loaded.ok() && !model_dir.empty()) {
      auto roles = LoadSpecialRoles(model_dir, **loaded);
      if (!roles.ok()) loaded = roles.status();
      else (*loaded)->set_roles(std::move(*roles));
    }
  } else {
    loaded = LoadTokenizerFolder(model_dir);
  }
  if (!loaded.ok()) {
    std::fprintf(stderr, "phi-tokenizer: cannot load the tokenizer: %s\n", loaded.status().ToString().c_str());
    PHI_LOG(ERROR, "tokenizer_load_failed").Str("error", loaded.status().ToString());
    return 1;
  }
  std::shared_ptr<const Tokenizer> tokenizer(std::move(*loaded));
  PHI_LOG(INFO, "tokenizer_loaded")
      .Str("model", model_dir.empty() ? tokenizer_json : model_dir)
      .Int("vocab_size", tokenizer->vocab_size())
      .Int("merges", static_cast<int64_t>(tokenizer->num_merges()))
      .Int("added_tokens", static_cast<int64_t>(tokenizer->added_tokens().size()));

  TokenizerServiceImpl service(tokenizer, options, &metrics::DefaultRegistry());
  auto running = common::StartOrExit(server, {&service});
  return common::ServeUntilSignal(*running);
}

}  // namespace phi::tokenizer
