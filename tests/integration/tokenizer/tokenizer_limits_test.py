"""phi-tokenizer refuses an oversized request before it costs memory in proportion to its size:
gRPC's receive limit (by default derived from --max-text-bytes, --max-batch and the Decode id
limit: tokenizer_service.cc MaxRequestBytes) answers RESOURCE_EXHAUSTED for a message one byte
over it, and the gRPC memory quota (--grpc-memory-quota-bytes) bounds what gRPC buffers of a
huge one before it can refuse it; the process's peak RSS (VmHWM, /proc) shows it.

usage: tokenizer_limits_test.py PHI_TOKENIZER_BINARY MODEL_DIR
"""
from __future__ import annotations

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import phi_testlib  # noqa: E402

BINARY = ""
MODEL = ""
MIB = 1 << 20


def proc_status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class TokenizerLimitsTest(unittest.TestCase):
    def start(self, extra):
        import grpc
        from phi.v1 import tokenizer_pb2_grpc
        svc = phi_testlib.Service(BINARY, [f"--model={MODEL}", *extra], name="tokenizer-limits")
        self.addCleanup(svc.kill)
        svc.wait_healthy()
        # The client may send anything: the server's limits are under test.
        channel = grpc.insecure_channel(svc.address, options=[("grpc.max_send_message_length", 1 << 30)])
        self.addCleanup(channel.close)
        return svc, tokenizer_pb2_grpc.TokenizerServiceStub(channel)

    def serving_event(self, svc) -> dict:
        for line in svc.log().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "serving":
                return json.loads(line)
        raise AssertionError(f"no serving event:\n{svc.log()}")

    def encode_request(self, size: int):
        """An EncodeRequest whose serialized size is exactly `size` bytes."""
        from phi.v1 import tokenizer_pb2
        text_len = size
        while True:
            req = tokenizer_pb2.EncodeRequest(prompts=[tokenizer_pb2.Prompt(text=b"a" * text_len)])
            over = req.ByteSize() - size
            if over == 0:
                return req
            text_len -= over

    def test_one_byte_over_the_derived_receive_limit_is_resource_exhausted(self):
        import grpc
        svc, stub = self.start([])
        limit = self.serving_event(svc)["max_receive_message_bytes"]
        # Default --max-text-bytes 4 MiB, --max-batch 256, 2^20 ids per Decode: ~5 MiB.
        self.assertGreater(limit, 4 * MIB)
        self.assertLess(limit, 8 * MIB)
        # At the limit gRPC lets it through, and the service refuses the text itself, naming its flag.
        with self.assertRaises(grpc.RpcError) as at:
            stub.Encode(self.encode_request(limit), timeout=60)
        self.assertEqual(at.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, at.exception.details())
        self.assertIn("--max-text-bytes", at.exception.details())
        with self.assertRaises(grpc.RpcError) as over:
            stub.Encode(self.encode_request(limit + 1), timeout=60)
        self.assertEqual(over.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, over.exception.details())

    def test_huge_request_costs_at_most_the_memory_quota(self):
        import grpc
        from phi.v1 import tokenizer_pb2
        quota = 16 * MIB
        svc, stub = self.start([f"--grpc-memory-quota-bytes={quota}"])
        self.assertEqual(self.serving_event(svc)["grpc_memory_quota_bytes"], quota)
        self.assertEqual(len(stub.Encode(tokenizer_pb2.EncodeRequest(
            prompts=[tokenizer_pb2.Prompt(text=b"warm up")]), timeout=30).encodings), 1)
        before = proc_status_bytes(svc.proc.pid, "VmHWM")
        size = 96 * MIB
        with self.assertRaises(grpc.RpcError) as huge:
            stub.Encode(self.encode_request(size), timeout=120)
        self.assertEqual(huge.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, huge.exception.details())
        grew = proc_status_bytes(svc.proc.pid, "VmHWM") - before
        # Buffering the whole message would add its 96 MiB (and parsing it as much again); the
        # quota holds gRPC to 16 MiB, plus the allocator's slack.
        self.assertLess(grew, quota + 16 * MIB, f"peak RSS grew {grew / MIB:.1f} MiB for a {size // MIB} MiB request")
        # And the service goes on serving.
        r = stub.Encode(tokenizer_pb2.EncodeRequest(prompts=[tokenizer_pb2.Prompt(text=b"still here")]), timeout=30)
        self.assertGreater(len(r.encodings[0].ids), 0)


if __name__ == "__main__":
    BINARY, MODEL = sys.argv[1], sys.argv[2]
    phi_testlib.add_proto_path()
    unittest.main(argv=[sys.argv[0], "-v"])
