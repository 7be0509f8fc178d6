"""A service binary's life: start on loopback, health SERVING over real gRPC,
/metrics accepted by promtool, an unimplemented-or-real RPC surface reachable by
reflection, bad flags refused with exit 2, a busy port refused, SIGTERM -> exit 0, also
promptly while a client keeps an idle connection open; a request over --max-receive-message-bytes
is RESOURCE_EXHAUSTED, and a huge one costs no more memory than --grpc-memory-quota-bytes.

usage: service_lifecycle_test.py BINARY PROMTOOL [-- extra service args]
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import phi_testlib  # noqa: E402

BINARY = ""
PROMTOOL = ""
EXTRA: list[str] = []


def proc_status_bytes(pid: int, field: str) -> int:
    """A size field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class ServiceLifecycleTest(unittest.TestCase):
    def test_health_metrics_and_graceful_shutdown(self):
        svc = phi_testlib.Service(BINARY, EXTRA, name=os.path.basename(BINARY))
        try:
            svc.wait_healthy()
            text = svc.scrape()
            for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                         "process_start_time_seconds", "process_open_fds", "phi_build_info"):
                self.assertIn(f"\n{name}", "\n" + text, f"{name} missing from /metrics")
            # The health RPC itself is counted by the gRPC metrics interceptor.
            text = svc.scrape()
            self.assertIn('phi_grpc_server_requests_total{service="grpc.health.v1.Health",method="Check",code="OK"}',
                          text)
            check = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                                   capture_output=True, timeout=30)
            self.assertEqual(check.returncode, 0, check.stdout.decode() + check.stderr.decode())
            rc = svc.terminate()
            self.assertEqual(rc, 0, f"exit code after SIGTERM:\n{svc.log()}")
            self.assertIn("shutdown_done", svc.log())
        finally:
            svc.kill()

    def test_sigterm_with_idle_client_connection_exits_promptly(self):
        # A grpcio channel without an active call does not read its socket, so it never answers
        # the server's GOAWAY ping, and gRPC's Shutdown waited seconds for it to go away; the
        # server now closes such connections once no call is left (services/common/server.cc).
        import grpc
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        grace = 30
        svc = phi_testlib.Service(BINARY, [*EXTRA, f"--shutdown-grace-seconds={grace}"],
                                  name=os.path.basename(BINARY) + "-idle")
        channel = grpc.insecure_channel(svc.address)
        try:
            svc.wait_healthy()
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            # Idle for longer than the reply linger (ServiceServer::kReplyLinger, 1 s), so the
            # connection is the only thing left to close.
            time.sleep(1.5)
            rc = svc.terminate()
            self.assertEqual(rc, 0, f"exit code after SIGTERM:\n{svc.log()}")
            events = {}
            for line in svc.log().splitlines():
                if line.startswith("{"):
                    e = json.loads(line)
                    events.setdefault(e.get("event"), datetime.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")))
            took = (events["shutdown_done"] - events["shutdown_started"]).total_seconds()
            # Measured from the service's own log (process start-up and exit are not in it):
            # ~0.1 s here, against ~4 s before and the 30 s grace it may use for calls; 1 s
            # leaves a loaded 2-core machine a wide margin.
            self.assertLess(took, 1.0, f"shutdown took {took:.2f} s with an idle client:\n{svc.log()}")
        finally:
            channel.close()
            svc.kill()

    def test_oversized_request_is_refused_within_the_memory_quota(self):
        # Health Check's `service` string makes a request of any size on every service.
        import grpc
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        mib = 1 << 20
        limit, quota = mib, 16 * mib
        svc = phi_testlib.Service(BINARY, [*EXTRA, f"--max-receive-message-bytes={limit}",
                                           f"--grpc-memory-quota-bytes={quota}"],
                                  name=os.path.basename(BINARY) + "-limits")
        channel = grpc.insecure_channel(svc.address, options=[("grpc.max_send_message_length", 1 << 30)])
        try:
            svc.wait_healthy()
            stub = health_pb2_grpc.HealthStub(channel)

            def check(size):
                req = health_pb2.HealthCheckRequest(service="s" * size)
                req = health_pb2.HealthCheckRequest(service="s" * (size - (req.ByteSize() - size)))
                self.assertEqual(req.ByteSize(), size)
                with self.assertRaises(grpc.RpcError) as e:
                    stub.Check(req, timeout=120)
                return e.exception.code()

            # At the limit gRPC hands it to the health service, which refuses the name itself.
            self.assertNotEqual(check(limit), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(check(limit + 1), grpc.StatusCode.RESOURCE_EXHAUSTED)
            before = proc_status_bytes(svc.proc.pid, "VmHWM")
            self.assertEqual(check(96 * mib), grpc.StatusCode.RESOURCE_EXHAUSTED)
            grew = proc_status_bytes(svc.proc.pid, "VmHWM") - before
            # Whole, the message would add its 96 MiB; the quota holds gRPC to 16 MiB (+ slack).
            self.assertLess(grew, quota + 24 * mib, f"peak RSS grew {grew / mib:.1f} MiB for a 96 MiB request")
            self.assertEqual(svc.terminate(), 0, svc.log())
        finally:
            channel.close()
            svc.kill()

    def test_unknown_flag_exits_2_naming_it(self):
        r = subprocess.run([BINARY, "--no-such-flag=1", *EXTRA], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"--no-such-flag", r.stderr)

    def test_invalid_port_exits_2_with_range(self):
        r = subprocess.run([BINARY, "--port=99999", *EXTRA], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"--port", r.stderr)
        self.assertIn(b"[0, 65535]", r.stderr)

    def test_port_in_use_is_a_clear_error(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            r = subprocess.run([BINARY, "--host=127.0.0.1", f"--port={port}",
                                f"--metrics-port={phi_testlib.free_port()}", *EXTRA],
                               capture_output=True, timeout=120)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"127.0.0.1:{port}".encode(), r.stderr)


if __name__ == "__main__":
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    BINARY, PROMTOOL = args[0], args[1]
    EXTRA = extra
    phi_testlib.add_proto_path()
    unittest.main(argv=[sys.argv[0], "-v"])
