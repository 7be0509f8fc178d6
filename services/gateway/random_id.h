// Random ids for requests and responses that must not collide across gateway replicas or
// restarts (workers are shared by every gateway and refuse an id already in flight).
#ifndef PHI_SERVICES_GATEWAY_RANDOM_ID_H_
#define PHI_SERVICES_GATEWAY_RANDOM_ID_H_

#include <string>

namespace phi::gateway {

// 128 random bits as 32 hex digits (a per-thread generator seeded from std::random_device).
std::string RandomHex();

}  // namespace phi::gateway

#endif  // PHI_SERVICES_GATEWAY_RANDOM_ID_H_
