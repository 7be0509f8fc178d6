"""Helpers for integration tests that start real phi-serve processes on loopback."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.request


def add_proto_path() -> None:
    """Puts the generated Python stubs (PHI_PROTO_PYTHON_DIR) on sys.path."""
    d = os.environ.get("PHI_PROTO_PYTHON_DIR")
    if not d or not os.path.isdir(d):
        raise SystemExit("PHI_PROTO_PYTHON_DIR is not set to the generated stubs folder")
    if d not in sys.path:
        sys.path.insert(0, d)
    # The generated grpc.health.v1 stubs sit under d/grpc, but `grpc` is the installed grpcio
    # package, found first: extend its path so that `grpc.health.v1` resolves to them.
    import grpc
    if os.path.join(d, "grpc") not in grpc.__path__:
        grpc.__path__.append(os.path.join(d, "grpc"))


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def make_lora(base: str, out: str, rank: int, seed: int, targets: str = "all") -> str:
    """A random PEFT LoRA adapter for the Phi model folder `base`, written by peft itself
    (tools/make_lora.py: LoraConfig(init_lora_weights=False), so B is not zero); returns `out`."""
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_lora.py"), "--base", base, "--out", out,
                    "--rank", str(rank), "--seed", str(seed), "--targets", targets],
                   check=True, stdout=subprocess.DEVNULL)
    return out


_handed_out: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1, and never one this process handed out
    before: the kernel may give a just-closed port again, and a test that asks twice (a group
    leader's rendezvous port, then a rank's gRPC port) must not get the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class Service:
    """A service binary started on free loopback ports, stderr kept for messages."""

    def __init__(self, binary: str, extra_args: list[str], name: str = "service"):
        self.name = name
        self._binary, self._extra_args = binary, extra_args
        self._restarts_left = 2
        self._start()

    def _start(self) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = f"/tmp/phi-test-{self.name}-{os.getpid()}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.args = [self._binary, "--host=127.0.0.1", f"--port={self.port}",
                     f"--metrics-port={self.metrics_port}", *self._extra_args]
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)

    def _restart_if_port_was_taken(self) -> bool:
        """free_port() closes its socket before the service binds, so a test running beside
        this one can take the port in between; then start again on new ports."""
        log = self.log()
        if self._restarts_left == 0 or ("port in use" not in log and "address in use" not in log):
            return False
        self._restarts_left -= 1
        self._log.close()
        self._start()
        return True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:  # terminate() closes it; the log stays readable after
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Polls grpc.health.v1 Check until SERVING; fails if the process exits."""
        import grpc
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        deadline = time.time() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.time() < deadline:
                if self.proc.poll() is not None and self._restart_if_port_was_taken():
                    return self.wait_healthy(timeout)
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise AssertionError(f"{self.name} not SERVING after {timeout}s:\n{self.log()}")

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            assert r.status == 200, r.status
            ctype = r.headers.get("Content-Type", "")
            assert ctype.startswith("text/plain; version=0.0.4"), ctype
            return r.read().decode("utf-8")

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class ServiceTestCase(unittest.TestCase):
    """Test classes that share one service, started once for the class, and a gRPC stub to it
    (cls.svc, cls.channel, cls.stub); setUpClass calls start_service."""

    @classmethod
    def start_service(cls, binary: str, extra_args: list[str], name: str, stub_class) -> None:
        import grpc
        cls.svc = Service(binary, extra_args, name=name)
        cls.svc.wait_healthy()
        cls.channel = grpc.insecure_channel(cls.svc.address)
        cls.stub = stub_class(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.svc.kill()
