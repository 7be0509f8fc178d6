#include "services/worker/parallel/kv_client.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "phi/v1/internal/rendezvous.grpc.pb.h"
#include "services/common/status_macros.h"

namespace phi::worker::parallel {
namespace {
namespace pb = ::phi::v1::internal;

absl::Status FromGrpc(const grpc::Status& s, const std::string& what, const std::string& leader) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat("rendezvous ", what, " at leader ", leader, ": ", s.error_message());
  switch (s.error_code()) {
    case grpc::StatusCode::NOT_FOUND: return absl::NotFoundError(msg);
    case grpc::StatusCode::INVALID_ARGUMENT: return absl::InvalidArgumentError(msg);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(absl::StrCat(msg, " (leader not reachable or not answering)"));
    default: return absl::UnavailableError(msg);
  }
}
}  // namespace

class KvClient::Impl {
 public:
  explicit Impl(const std::string& leader)
      : stub_(pb::RendezvousService::NewStub(
            grpc::CreateChannel(leader, grpc::InsecureChannelCredentials()))) {}
  std::unique_ptr<pb::RendezvousService::Stub> stub_;
};

KvClient::KvClient(const std::string& leader, std::chrono::milliseconds rpc_timeout)
    : leader_(leader), rpc_timeout_(rpc_timeout), impl_(std::make_unique<Impl>(leader)) {}
KvClient::~KvClient() = default;

namespace {
void Prepare(grpc::ClientContext* ctx, std::chrono::milliseconds timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  ctx->set_wait_for_ready(true);  // the leader may start after us
}
}  // namespace

absl::Status KvClient::Set(const std::string& key, const std::string& value) {
  grpc::ClientContext ctx;
  Prepare(&ctx, rpc_timeout_);
  pb::SetRequest req;
  req.set_key(key);
  req.set_value(value);
  pb::SetResponse resp;
  return FromGrpc(impl_->stub_->Set(&ctx, req, &resp), absl::StrCat("set '", key, "'"), leader_);
}

absl::StatusOr<std::string> KvClient::Get(const std::string& key) {
  grpc::ClientContext ctx;
  Prepare(&ctx, rpc_timeout_);
  pb::GetRequest req;
  req.set_key(key);
  pb::GetResponse resp;
  PHI_RETURN_IF_ERROR(FromGrpc(impl_->stub_->Get(&ctx, req, &resp), absl::StrCat("get '", key, "'"), leader_));
  return std::move(*resp.mutable_value());
}

absl::StatusOr<std::vector<std::string>> KvClient::Wait(const std::vector<std::string>& keys,
                                                        std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  Prepare(&ctx, rpc_timeout_ + timeout);
  pb::WaitRequest req;
  for (const auto& key : keys) req.add_keys(key);
  req.set_timeout_ms(std::max<int64_t>(1, timeout.count()));
  pb::WaitResponse resp;
  PHI_RETURN_IF_ERROR(FromGrpc(impl_->stub_->Wait(&ctx, req, &resp), "wait", leader_));
  return std::vector<std::string>(resp.missing_keys().begin(), resp.missing_keys().end());
}

absl::StatusOr<std::vector<std::string>> KvClient::List(const std::string& prefix) {
  grpc::ClientContext ctx;
  Prepare(&ctx, rpc_timeout_);
  pb::ListRequest req;
  req.set_prefix(prefix);
  pb::ListResponse resp;
  PHI_RETURN_IF_ERROR(FromGrpc(impl_->stub_->List(&ctx, req, &resp), absl::StrCat("list '", prefix, "'"), leader_));
  return std::vector<std::string>(resp.keys().begin(), resp.keys().end());
}

}  // namespace phi::worker::parallel
