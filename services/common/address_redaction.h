// Removes network addresses from a message that leaves the system: gRPC's own error messages
// name the peer ("ipv4:10.0.3.7:50051: Failed to connect to remote host"), and the gateway
// passes worker and tokenizer errors on to its clients, who must not learn internal addresses.
// The gateway logs the original message; clients get the redacted one.
#ifndef PHI_SERVICES_COMMON_ADDRESS_REDACTION_H_
#define PHI_SERVICES_COMMON_ADDRESS_REDACTION_H_

#include <string>
#include <string_view>

namespace phi::common {

// What an address is replaced with.
inline constexpr std::string_view kRedactedAddress = "[internal address]";

// `message` with every address replaced by kRedactedAddress. An address is a word (a run of
// characters other than whitespace and , ; ( ) " ' < > =) that, without trailing '.' or ':',
//  - starts with a gRPC URI scheme: ipv4:, ipv6:, unix:, unix-abstract:, dns:, vsock:; or
//  - is host:port, the host a name with a letter in it, an IPv4 dotted quad or a [bracketed]
//    IPv6 address, the port decimal digits; or
//  - is an IPv4 dotted quad, or a [bracketed] IPv6 address.
std::string RedactAddresses(std::string_view message);

}  // namespace phi::common

#endif  // PHI_SERVICES_COMMON_ADDRESS_REDACTION_H_
