#include "services/gateway/http_exchange.h"

#include <boost/asio/post.hpp>
#include <exception>
#include <utility>

#include "absl/strings/str_format.h"
#include "services/common/logging.h"

namespace phi::gateway::http_internal {

template <class F>
void ExchangeImpl::Post(F f) {
  std::shared_ptr<SessionBase> session = session_.lock();
  if (session == nullptr) return;
  asio::post(session->executor(), [session = session_, self = shared_from_this(), f = std::move(f)]() mutable {
    if (auto s = session.lock()) f(*s, self.get());
  });
}

void ExchangeImpl::Respond(int status, std::string_view content_type, std::string body, HttpHeaders extra) {
  std::lock_guard lock(mu_);
  if (answered_ || gone_ || finished_) return;
  answered_ = ended_ = true;
  Post([status, ct = std::string(content_type), body = std::move(body), extra = std::move(extra)](
           SessionBase& s, ExchangeImpl* ex) mutable {
    s.ExHead(ex, status, std::move(ct), std::move(extra), std::move(body), /*whole=*/true);
  });
}

void ExchangeImpl::StartStream(int status, std::string_view content_type, HttpHeaders extra) {
  std::lock_guard lock(mu_);
  if (answered_ || gone_ || finished_) return;
  answered_ = streaming_ = true;
  Post([status, ct = std::string(content_type), extra = std::move(extra)](SessionBase& s, ExchangeImpl* ex) mutable {
    s.ExHead(ex, status, std::move(ct), std::move(extra), {}, /*whole=*/false);
  });
}

bool ExchangeImpl::Write(std::string data) {
  std::lock_guard lock(mu_);
  if (gone_ || broken_ || finished_ || !streaming_ || ended_) return false;
  if (data.empty()) return true;  // an empty chunk would end the stream
  std::string framed;
  if (chunked_) {
    framed = absl::StrFormat("%x\r\n", data.size());
    framed.reserve(framed.size() + data.size() + 2);
    framed += data;
    framed += "\r\n";
  } else {
    framed = std::move(data);
  }
  const size_t n = framed.size();
  if (queued_.load(std::memory_order_relaxed) + n > max_queued_) {
    broken_ = true;
    Post([](SessionBase& s, ExchangeImpl* ex) { s.ExAbort(ex, "queue_overflow"); });
    return false;
  }
  queued_.fetch_add(n, std::memory_order_relaxed);
  Post([framed = std::move(framed)](SessionBase& s, ExchangeImpl* ex) mutable { s.ExData(ex, std::move(framed)); });
  return true;
}

void ExchangeImpl::End() {
  std::lock_guard lock(mu_);
  if (!streaming_ || ended_ || gone_ || broken_ || finished_) return;
  ended_ = true;
  Post([](SessionBase& s, ExchangeImpl* ex) { s.ExEnd(ex); });
}

void ExchangeImpl::OnClientGone(std::function<void()> callback) {
  {
    std::lock_guard lock(mu_);
    if (!gone_) {
      gone_callback_ = std::move(callback);
      return;
    }
  }
  RunCallback(callback);
}

ExchangeImpl::Claim ExchangeImpl::ClaimForError() {
  std::lock_guard lock(mu_);
  if (!answered_) {
    answered_ = ended_ = true;
    return Claim::kClaimed;
  }
  return streaming_ ? Claim::kStreaming : Claim::kAnswered;
}

bool ExchangeImpl::MarkFinished() {
  std::lock_guard lock(mu_);
  if (gone_ || finished_) return false;
  finished_ = true;
  return true;
}

bool ExchangeImpl::MarkGone() {
  std::function<void()> callback;
  {
    std::lock_guard lock(mu_);
    if (gone_ || finished_) return false;
    gone_ = true;
    gone_flag_.store(true, std::memory_order_release);
    callback = std::move(gone_callback_);
  }
  RunCallback(callback);
  return true;
}

void ExchangeImpl::RunCallback(const std::function<void()>& callback) {
  if (!callback) return;
  try {
    callback();
  } catch (const std::exception& e) {
    PHI_LOG(ERROR, "http_client_gone_callback_threw").Str("what", e.what());
  } catch (...) {
    PHI_LOG(ERROR, "http_client_gone_callback_threw");
  }
}

}  // namespace phi::gateway::http_internal
