#include "services/common/address_redaction.h"

#include <gtest/gtest.h>

namespace phi::common {
namespace {

TEST(RedactAddresses, GrpcConnectFailureLosesItsPeer) {
  EXPECT_EQ(RedactAddresses("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.3.7:50051: "
                            "Failed to connect to remote host: Connection refused"),
            "failed to connect to all addresses; last error: UNKNOWN: [internal address]: "
            "Failed to connect to remote host: Connection refused");
}

TEST(RedactAddresses, HostPortForms) {
  EXPECT_EQ(RedactAddresses("worker 127.0.0.1:9 failed"), "worker [internal address] failed");
  EXPECT_EQ(RedactAddresses("at worker-0.phi-worker.default.svc:50051."), "at [internal address].");
  EXPECT_EQ(RedactAddresses("peer [::1]:8080, then localhost:1"), "peer [internal address], then [internal address]");
  EXPECT_EQ(RedactAddresses("(ipv6:[fd00::2]:50051)"), "([internal address])");
  EXPECT_EQ(RedactAddresses("DNS resolution failed for dns:///workers:50051"),
            "DNS resolution failed for [internal address]");
  EXPECT_EQ(RedactAddresses("unix:/run/phi.sock closed"), "[internal address] closed");
  EXPECT_EQ(RedactAddresses("from 192.168.1.20 now"), "from [internal address] now");
}

TEST(RedactAddresses, LeavesOrdinaryTextAlone) {
  for (const char* text : {"prompt_ids[3]: 70000 is past the vocabulary (0..51199)", "ratio 3:5 at 12:30:45",
                           "KV cache full: 12 blocks free, 40 needed", "version 1.2.3 ready", "field: value",
                           "no token within 30 s (--first-token-timeout-seconds)", ""}) {
    EXPECT_EQ(RedactAddresses(text), text) << text;
  }
}

}  // namespace
}  // namespace phi::common
