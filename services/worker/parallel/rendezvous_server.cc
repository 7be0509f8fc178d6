#include "services/worker/parallel/rendezvous_server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "phi/v1/internal/rendezvous.grpc.pb.h"

namespace phi::worker::parallel {
namespace {
namespace pb = ::phi::v1::internal;
constexpr int64_t kDefaultWaitMs = 30000;
constexpr int64_t kMaxWaitMs = 600000;
constexpr size_t kMaxValueBytes = 4 << 20;
}  // namespace

class RendezvousServer::Service final : public pb::RendezvousService::Service {
 public:
  explicit Service(KvStore* store) : store_(store) {}

  grpc::Status Set(grpc::ServerContext*, const pb::SetRequest* req, pb::SetResponse*) override {
    if (req->key().empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "key: must not be empty"};
    if (req->value().size() > kMaxValueBytes) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              absl::StrCat("value of key '", req->key(), "': ", req->value().size(),
                           " bytes, at most ", kMaxValueBytes)};
    }
    store_->Set(req->key(), req->value());
    return grpc::Status::OK;
  }

  grpc::Status Get(grpc::ServerContext*, const pb::GetRequest* req, pb::GetResponse* resp) override {
    auto value = store_->Get(req->key());
    if (!value) return {grpc::StatusCode::NOT_FOUND, absl::StrCat("key '", req->key(), "' not set")};
    resp->set_value(std::move(*value));
    return grpc::Status::OK;
  }

  grpc::Status Wait(grpc::ServerContext* ctx, const pb::WaitRequest* req, pb::WaitResponse* resp) override {
    int64_t timeout_ms = req->timeout_ms() == 0 ? kDefaultWaitMs : req->timeout_ms();
    if (timeout_ms < 0 || timeout_ms > kMaxWaitMs) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              absl::StrCat("timeout_ms: ", timeout_ms, ", allowed 1 .. ", kMaxWaitMs)};
    }
    // Never wait past the caller's own deadline: it would be answering no one.
    const auto until_deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
        ctx->deadline() - std::chrono::system_clock::now());
    timeout_ms = std::max<int64_t>(0, std::min<int64_t>(timeout_ms, until_deadline.count()));
    std::vector<std::string> keys(req->keys().begin(), req->keys().end());
    for (auto& key : store_->Wait(keys, std::chrono::milliseconds(timeout_ms))) {
      resp->add_missing_keys(std::move(key));
    }
    return grpc::Status::OK;
  }

  grpc::Status List(grpc::ServerContext*, const pb::ListRequest* req, pb::ListResponse* resp) override {
    for (auto& key : store_->List(req->prefix())) resp->add_keys(std::move(key));
    return grpc::Status::OK;
  }

 private:
  KvStore* store_;
};

RendezvousServer::RendezvousServer() = default;

absl::StatusOr<std::unique_ptr<RendezvousServer>> RendezvousServer::Start(
    const std::string& listen_address) {
  std::unique_ptr<RendezvousServer> server(new RendezvousServer());
  server->service_ = std::make_unique<Service>(&server->store_);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("rendezvous: cannot listen on ", listen_address, " (address in use or invalid)"));
  }
  return server;
}

void RendezvousServer::Shutdown() {
  store_.Shutdown();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    server_->Wait();
    server_.reset();
  }
}

RendezvousServer::~RendezvousServer() { Shutdown(); }

}  // namespace phi::worker::parallel
