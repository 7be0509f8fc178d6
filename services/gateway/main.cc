// phi-gateway: the public front door. main() stays small: flags, then RunGateway.
#include "services/gateway/gateway_server.h"

int main(int argc, char** argv) { return phi::gateway::GatewayMain(argc, argv); }
