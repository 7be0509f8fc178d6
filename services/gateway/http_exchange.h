// One HTTP request and its response between the handler's threads and the connection's strand
// (internal to the phi_gateway_http_server target): ExchangeImpl is the HttpExchange handlers
// get; every call takes its lock and posts the work to the connection (SessionBase), so a
// handler may answer from any thread, and after the connection or server is gone.
#ifndef PHI_SERVICES_GATEWAY_HTTP_EXCHANGE_H_
#define PHI_SERVICES_GATEWAY_HTTP_EXCHANGE_H_

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "services/gateway/http_server.h"

namespace phi::gateway::http_internal {

namespace asio = boost::asio;

class ExchangeImpl;

// One connection. Everything but the Post* functions runs on the connection's strand.
class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  virtual void PostStart() = 0;
  virtual void PostClose() = 0;
  virtual void PostStopAccepting() = 0;
  virtual asio::any_io_executor executor() = 0;  // the connection's strand
  // From the exchange, on the strand.
  virtual void ExHead(ExchangeImpl* ex, int status, std::string content_type, HttpHeaders extra, std::string body,
                      bool whole) = 0;
  virtual void ExData(ExchangeImpl* ex, std::string framed) = 0;
  virtual void ExEnd(ExchangeImpl* ex) = 0;
  virtual void ExAbort(ExchangeImpl* ex, std::string_view reason) = 0;
};

class ExchangeImpl final : public HttpExchange, public std::enable_shared_from_this<ExchangeImpl> {
 public:
  ExchangeImpl(HttpRequest request, std::weak_ptr<SessionBase> session, size_t max_queued, bool chunked)
      : request_(std::move(request)),
        session_(std::move(session)),
        max_queued_(max_queued),
        chunked_(chunked) {}

  const HttpRequest& request() const override { return request_; }
  void Respond(int status, std::string_view content_type, std::string body, HttpHeaders extra) override;
  void StartStream(int status, std::string_view content_type, HttpHeaders extra) override;
  bool Write(std::string data) override;
  void End() override;
  void OnClientGone(std::function<void()> callback) override;
  bool client_gone() const override { return gone_flag_.load(std::memory_order_acquire); }

  // Session side, on the strand.

  // Bytes handed to Write() and not yet on the wire.
  void Written(size_t n) { queued_.fetch_sub(n, std::memory_order_relaxed); }

  enum class Claim { kClaimed, kAnswered, kStreaming };
  // For the server's own 500: takes the answer away from the handler unless it answered.
  Claim ClaimForError();
  // The response is on the wire. False when the client was already gone.
  bool MarkFinished();
  // The client is gone before the response finished; runs the callback. False when it finished
  // (or was gone) already.
  bool MarkGone();

 private:
  static void RunCallback(const std::function<void()>& callback);
  // mu_ held: gone_ and finished_ are set under it before the server stops and its io_context
  // is destroyed, so nothing is posted to a dead io_context. The exchange keeps no executor of
  // its own: it may outlive the server.
  template <class F>
  void Post(F f);

  const HttpRequest request_;
  const std::weak_ptr<SessionBase> session_;
  const size_t max_queued_;
  const bool chunked_;
  std::atomic<size_t> queued_{0};
  std::atomic<bool> gone_flag_{false};

  std::mutex mu_;
  bool answered_ = false;   // Respond or StartStream called (or the server answered)
  bool streaming_ = false;  // StartStream called
  bool ended_ = false;      // Respond or End called
  bool broken_ = false;     // a Write overflowed the queue
  bool finished_ = false;   // the whole response is written
  bool gone_ = false;
  std::function<void()> gone_callback_;
};

}  // namespace phi::gateway::http_internal

#endif  // PHI_SERVICES_GATEWAY_HTTP_EXCHANGE_H_
