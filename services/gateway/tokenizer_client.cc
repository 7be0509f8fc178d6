#include "services/gateway/tokenizer_client.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "services/common/address_redaction.h"
#include "services/common/grpc_status.h"
#include "services/common/logging.h"
#include "services/tokenizer/tokenizer_loader.h"

namespace phi::gateway {

namespace {

std::unique_ptr<grpc::ClientContext> MakeContext(Deadline deadline) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (deadline != Deadline::max()) ctx->set_deadline(deadline);
  return ctx;
}

// What the tokenizer service's Encode does for one prompt, in-process (--local-tokenizer).
absl::StatusOr<std::vector<int32_t>> EncodeLocal(const phi::tokenizer::Tokenizer& tok, const phi::v1::Prompt& prompt,
                                                 bool parse_special) {
  absl::StatusOr<phi::tokenizer::Encoding> enc;
  if (prompt.kind_case() == phi::v1::Prompt::kSegments) {
    std::vector<phi::tokenizer::Segment> segs;
    segs.reserve(prompt.segments().segments_size());
    for (int j = 0; j < prompt.segments().segments_size(); ++j) {
      const phi::v1::Segment& s = prompt.segments().segments(j);
      switch (s.kind_case()) {
        case phi::v1::Segment::kText:
          segs.push_back(phi::tokenizer::Segment::Text(s.text()));
          break;
        case phi::v1::Segment::kSpecialToken:
          segs.push_back(phi::tokenizer::Segment::Special(s.special_token()));
          break;
        default:
          return absl::InvalidArgumentError(absl::StrCat("prompt.segments[", j, "]: set text or special_token"));
      }
    }
    enc = tok.EncodeSegments(segs);
  } else {
    enc = tok.Encode(prompt.text(), {.parse_special = parse_special, .offsets = false});
  }
  if (!enc.ok()) return absl::Status(enc.status().code(), absl::StrCat("prompt: ", enc.status().message()));
  return std::vector<int32_t>(enc->ids.begin(), enc->ids.end());
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenizerClient>> TokenizerClient::Create(const std::vector<std::string>& addresses) {
  if (addresses.empty()) return absl::InvalidArgumentError("--tokenizer: at least one host:port is required");
  std::unique_ptr<TokenizerClient> c(new TokenizerClient());
  c->addresses_ = addresses;
  for (const auto& a : addresses) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    c->stubs_.push_back(
        phi::v1::TokenizerService::NewStub(grpc::CreateCustomChannel(a, grpc::InsecureChannelCredentials(), args)));
  }
  return c;
}

std::string TokenizerClient::ClientError(size_t index, const grpc::Status& status) const {
  PHI_LOG(WARNING, "tokenizer_call_failed")
      .Str("address", addresses_[index])
      .Str("code", std::string(common::GrpcCodeName(status.error_code())))
      .Str("error", status.error_message());
  return absl::StrCat("tokenizer ", index + 1, ": ", common::RedactAddresses(status.error_message()));
}

template <typename Fn>
grpc::Status TokenizerClient::WithFailover(Fn&& call) {
  size_t start = NextStart();
  grpc::Status last;
  for (size_t k = 0; k < stubs_.size(); ++k) {
    size_t i = (start + k) % stubs_.size();
    last = call(i);
    if (last.error_code() != grpc::StatusCode::UNAVAILABLE) return last;
    last = grpc::Status(last.error_code(), ClientError(i, last));
  }
  return last;
}

absl::StatusOr<std::vector<int32_t>> TokenizerClient::Encode(const phi::v1::Prompt& prompt, bool parse_special,
                                                             Deadline deadline) {
  if (local_encode_) return EncodeLocal(*local_, prompt, parse_special);
  phi::v1::EncodeRequest req;
  *req.add_prompts() = prompt;
  req.set_parse_special_tokens(parse_special);
  phi::v1::EncodeResponse resp;
  grpc::Status s = WithFailover([&](size_t i) {
    auto ctx = MakeContext(deadline);
    return stubs_[i]->Encode(ctx.get(), req, &resp);
  });
  if (!s.ok()) return common::FromGrpcStatus(s);
  if (resp.encodings_size() != 1) return absl::InternalError("tokenizer: Encode returned no encoding");
  const auto& ids = resp.encodings(0).ids();
  return std::vector<int32_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::string> TokenizerClient::Decode(const std::vector<int32_t>& ids, bool skip_special,
                                                    Deadline deadline) {
  if (local_) {
    const std::vector<uint32_t> u(ids.begin(), ids.end());  // a negative id turns huge: refused by Decode
    return local_->Decode(u, skip_special);
  }
  phi::v1::DecodeRequest req;
  req.add_sequences()->mutable_ids()->Add(ids.begin(), ids.end());
  req.set_skip_special_tokens(skip_special);
  phi::v1::DecodeResponse resp;
  grpc::Status s = WithFailover([&](size_t i) {
    auto ctx = MakeContext(deadline);
    return stubs_[i]->Decode(ctx.get(), req, &resp);
  });
  if (!s.ok()) return common::FromGrpcStatus(s);
  if (resp.texts_size() != 1) return absl::InternalError("tokenizer: Decode returned no text");
  return resp.texts(0);
}

absl::Status TokenizerClient::LearnLimits(Deadline deadline) {
  if (vocab_size_.load(std::memory_order_acquire) >= 0) return absl::OkStatus();
  if (local_) {
    vocab_size_.store(static_cast<int32_t>(local_->vocab_size()), std::memory_order_release);
    return absl::OkStatus();
  }
  absl::StatusOr<phi::v1::InfoResponse> info = Info(deadline);
  if (!info.ok()) return info.status();
  max_batch_.store(info->max_batch() > 0 ? info->max_batch() : kDefaultMaxBatch, std::memory_order_relaxed);
  vocab_size_.store(info->vocab_size(), std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> TokenizerClient::DecodeDistinct(const std::vector<int32_t>& ids,
                                                                         Deadline deadline) {
  std::vector<std::string> out;
  out.reserve(ids.size());
  if (local_) {
    for (int32_t id : ids) {
      auto text = local_->Decode({static_cast<uint32_t>(id)}, false);
      if (!text.ok()) return text.status();
      out.push_back(std::move(*text));
    }
    return out;
  }
  const size_t batch = static_cast<size_t>(max_batch_.load(std::memory_order_relaxed));
  phi::v1::DecodeRequest req;
  phi::v1::DecodeResponse resp;
  for (size_t begin = 0; begin < ids.size(); begin += batch) {
    const size_t end = std::min(ids.size(), begin + batch);
    req.Clear();
    for (size_t k = begin; k < end; ++k) req.add_sequences()->add_ids(ids[k]);
    grpc::Status s = WithFailover([&](size_t i) {
      resp.Clear();
      auto ctx = MakeContext(deadline);
      return stubs_[i]->Decode(ctx.get(), req, &resp);
    });
    if (!s.ok()) return common::FromGrpcStatus(s);
    if (static_cast<size_t>(resp.texts_size()) != end - begin) {
      return absl::InternalError("tokenizer: Decode returned a wrong number of texts");
    }
    for (std::string& t : *resp.mutable_texts()) out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> TokenizerClient::DecodeEach(const std::vector<int32_t>& ids,
                                                                     Deadline deadline) {
  std::vector<std::string> out;
  if (ids.empty()) return out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) return absl::InvalidArgumentError(absl::StrCat("token id ", ids[i], " is negative"));
  }
  if (absl::Status s = LearnLimits(deadline); !s.ok()) return s;
  const int32_t vocab = vocab_size_.load(std::memory_order_acquire);
  // A prompt's ids and their top alternatives repeat a lot: decode each distinct one once.
  std::vector<int32_t> distinct;
  distinct.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < vocab) distinct.push_back(id);
  }
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  absl::StatusOr<std::vector<std::string>> texts = DecodeDistinct(distinct, deadline);
  if (!texts.ok()) return texts.status();
  out.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= vocab) {
      out.emplace_back();  // a padded output row: no text
      continue;
    }
    out.push_back((*texts)[std::lower_bound(distinct.begin(), distinct.end(), id) - distinct.begin()]);
  }
  return out;
}

absl::StatusOr<phi::v1::InfoResponse> TokenizerClient::Info(Deadline deadline) {
  phi::v1::InfoResponse resp;
  grpc::Status s = WithFailover([&](size_t i) {
    auto ctx = MakeContext(deadline);
    return stubs_[i]->Info(ctx.get(), phi::v1::InfoRequest(), &resp);
  });
  if (!s.ok()) return common::FromGrpcStatus(s);
  return resp;
}

absl::Status TokenizerClient::LoadLocal(const std::string& path, bool encode, const std::string& flag) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat(flag, ": no such path '", path, "'"));
  auto tok = S_ISDIR(st.st_mode) ? phi::tokenizer::LoadTokenizerFolder(path)
                                 : phi::tokenizer::LoadTokenizerJsonFile(path);
  if (!tok.ok()) return absl::Status(tok.status().code(), absl::StrCat(flag, ": ", tok.status().message()));
  local_ = std::move(*tok);
  local_encode_ = local_encode_ || encode;
  return absl::OkStatus();
}

std::unique_ptr<DecodeSession> TokenizerClient::StartDecode(bool skip_special, Deadline deadline) {
  std::unique_ptr<DecodeSession> s(new DecodeSession(this, skip_special, deadline));
  s->index_ = decode_rr_.fetch_add(1, std::memory_order_relaxed) % stubs_.size();
  if (local_) s->local_ = std::make_unique<phi::tokenizer::StreamDecoder>(*local_, skip_special);
  return s;
}

DecodeSession::~DecodeSession() { Abort(); }

void DecodeSession::Abort() {
  if (ctx_) ctx_->TryCancel();
  if (stream_) stream_->Finish().IgnoreError();
  stream_.reset();
  ctx_.reset();
}

absl::Status DecodeSession::Open(size_t index, bool /*replay*/) {
  index_ = index;
  ctx_ = MakeContext(deadline_);
  stream_ = client_->stubs_[index]->DecodeStream(ctx_.get());
  sent_first_ = false;
  return absl::OkStatus();
}

// One request message, one response message (the tokenizer answers every
// message, with an empty delta while a character is incomplete).
absl::StatusOr<std::string> DecodeSession::Exchange(const std::vector<int32_t>& ids, bool /*first*/) {
  phi::v1::DecodeStreamRequest req;
  req.mutable_ids()->Add(ids.begin(), ids.end());
  if (!sent_first_) req.set_skip_special_tokens(skip_special_);
  if (!stream_->Write(req)) return absl::UnavailableError("write failed");
  sent_first_ = true;
  phi::v1::DecodeStreamResponse resp;
  if (!stream_->Read(&resp)) return absl::UnavailableError("stream ended");
  return std::move(*resp.mutable_text_delta());
}

absl::StatusOr<std::string> DecodeSession::Push(const std::vector<int32_t>& ids) {
  if (local_) {
    std::vector<uint32_t> u(ids.begin(), ids.end());
    std::string delta;
    if (absl::Status s = local_->Push(u, &delta); !s.ok()) return s;
    return delta;
  }
  all_ids_.insert(all_ids_.end(), ids.begin(), ids.end());
  if (!stream_) Open(index_, false).IgnoreError();
  absl::StatusOr<std::string> delta = Exchange(ids, false);
  if (delta.ok()) {
    emitted_bytes_ += delta->size();
    return delta;
  }
  // Fail over: replay every id on the next tokenizer and keep only new text.
  grpc::Status last = stream_->Finish();
  std::string why = client_->ClientError(index_, last);
  if (last.error_code() != grpc::StatusCode::UNAVAILABLE && last.error_code() != grpc::StatusCode::OK) {
    stream_.reset();
    return absl::Status(common::FromGrpcStatus(last).code(), why);
  }
  for (size_t k = 1; k < client_->stubs_.size(); ++k) {
    Open((index_ + 1) % client_->stubs_.size(), true).IgnoreError();
    absl::StatusOr<std::string> text = Exchange(all_ids_, true);
    if (text.ok()) {
      if (text->size() <= emitted_bytes_) return std::string();
      std::string fresh = text->substr(emitted_bytes_);
      emitted_bytes_ = text->size();
      return fresh;
    }
    last = stream_->Finish();
    why = client_->ClientError(index_, last);
  }
  stream_.reset();
  return absl::UnavailableError(absl::StrCat("no tokenizer could decode: ", why));
}

absl::StatusOr<std::string> DecodeSession::Finish() {
  if (local_) {
    std::string rest;
    local_->Finish(&rest);
    return rest;
  }
  if (!stream_) return std::string();
  stream_->WritesDone();
  std::string rest;
  phi::v1::DecodeStreamResponse resp;
  while (stream_->Read(&resp)) rest += resp.text_delta();
  grpc::Status s = stream_->Finish();
  stream_.reset();
  ctx_.reset();
  if (!s.ok()) return absl::Status(common::FromGrpcStatus(s).code(), client_->ClientError(index_, s));
  emitted_bytes_ += rest.size();
  return rest;
}

}  // namespace phi::gateway
