// Makes the gateway's SIGTERM shutdown last as long as its in-flight work, not longer.
//
// An idle gateway took ~4 s to exit after SIGTERM, for two reasons outside our request code:
//  1. grpc::Server::Shutdown completes only when every client *connection* is gone, not just
//     every call. A connected but idle client (a grpcio channel with no active call does not
//     read its socket, so it never answers the server's GOAWAY ping) held it for seconds.
//  2. The metrics server's civetweb mg_stop (the end of common::ServiceServer::Shutdown) joins
//     a master thread that polls the listening socket with a 2 s timeout before it looks at
//     the stop flag: up to 2 s more (now fixed in MetricsHttpServer for every service).
// PromptShutdown fixes the first from the outside: once gRPC has begun shutting down (health is
// NOT_SERVING, new calls are refused) and the gateway is quiet (no generation running and the
// last one ended long enough ago for its reply to have left the socket buffers: drain semantics
// kept, in-flight streams finish, up to the server's grace deadline), it closes the remaining
// idle connections (grpc_server_cancel_all_calls, which has no call left to cancel then).
#ifndef PHI_SERVICES_GATEWAY_PROMPT_SHUTDOWN_H_
#define PHI_SERVICES_GATEWAY_PROMPT_SHUTDOWN_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "services/common/server.h"

namespace phi::gateway {

class PromptShutdown {
 public:
  // `quiet`: true when no work is left whose reply could still be on its way (checked every
  // 10 ms).
  PromptShutdown(common::ServiceServer* server, std::function<bool()> quiet);
  ~PromptShutdown();  // Done() if not yet

  // Call when shutdown begins (before common::ServiceServer::Shutdown); returns at once.
  void Begin();
  // Call when the server's Shutdown has returned: stops the helper thread.
  void Done();

 private:
  void Run();
  bool WaitFor(const std::function<bool()>& condition);  // false when Done() came first

  common::ServiceServer* server_;
  std::function<bool()> quiet_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_PROMPT_SHUTDOWN_H_
