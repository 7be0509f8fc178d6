// Wiring of the gateway process: flags, tokenizer client, worker pool, gRPC
// ChatService, the OpenAI-compatible HTTP API, metrics, graceful drain.
#ifndef PHI_SERVICES_GATEWAY_GATEWAY_SERVER_H_
#define PHI_SERVICES_GATEWAY_GATEWAY_SERVER_H_

namespace phi::gateway {

int GatewayMain(int argc, char** argv);

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_GATEWAY_SERVER_H_
