"""Errors that reach the gateway's clients never name an internal address: with the tokenizer
down, then the worker, the gRPC and HTTP answers name "tokenizer 1" / "worker group" and hold no
host:port of any service, while the gateway's log keeps the address for operators.

Runs the real stack (tests/integration/gateway/stack.py) from CTest's environment.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
import http_client  # noqa: E402
import stack  # noqa: E402
from stack import grpc, gateway_pb2  # noqa: E402
from phi.v1 import common_pb2  # noqa: E402

ADDRESS = re.compile(r"(ipv4:|ipv6:|unix:|127\.0\.0\.1|localhost|\[::1\])")


class InternalAddressesTest(unittest.TestCase):
    def setUp(self):
        self.s = stack.Stack(workers=1)
        self.addCleanup(self.s.close)
        self.stub = self.s.chat_stub()
        self.ports = [str(p) for p in (self.s.tok_port, *self.s.worker_ports)]

    def assert_no_address(self, text: str):
        self.assertIsNone(ADDRESS.search(text), text)
        for port in self.ports:
            self.assertNotIn(port, text)

    def complete_error(self) -> grpc.RpcError:
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Complete(gateway_pb2.CompleteRequest(
                prompt="Hello there", stopping=common_pb2.StoppingCriteria(max_new_tokens=2)), timeout=30)
        return e.exception

    def http_error(self):
        status, _, body = http_client.call_json(self.s.http_port, "POST", "/v1/completions",
                                                {"prompt": "Hello there", "max_tokens": 2}, timeout=30)
        self.assertGreaterEqual(status, 500, body)
        return json.dumps(body)

    def proc(self, name):
        return next(p for p in self.s.procs if p.name == name)

    def test_tokenizer_and_worker_failures_hide_addresses(self):
        tokenizer = self.proc("tokenizer")
        tokenizer.proc.kill()
        tokenizer.proc.wait()
        err = self.complete_error()
        self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
        self.assertIn("tokenizer 1", err.details())
        self.assert_no_address(err.details())
        self.assert_no_address(self.http_error())
        gateway_log = self.proc("gateway").tail()
        self.assertIn("tokenizer_call_failed", gateway_log)
        self.assertIn(f"127.0.0.1:{self.s.tok_port}", gateway_log)

        worker = self.proc("worker0")
        worker.proc.kill()
        worker.proc.wait()
        # The pool checks every 0.2 s (--health-interval-seconds): soon no group is ready.
        deadline = time.time() + 30
        while True:
            err = self.complete_error()
            if "no ready worker group" in err.details() or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertIn("no ready worker group (1 group: 1 unreachable)", err.details())
        self.assert_no_address(err.details())
        self.assert_no_address(self.http_error())
        self.assertIn(f"127.0.0.1:{self.s.worker_ports[0]}", self.proc("gateway").tail())


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
