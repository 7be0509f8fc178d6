"""Starts the real phi-tokenizer, phi-worker(s) and phi-gateway on loopback for integration tests.

Binaries and the model folder come from the environment that CTest sets:
PHI_TOKENIZER_BIN, PHI_WORKER_BIN, PHI_GATEWAY_BIN, PHI_TEST_MODEL, PHI_PROTO_PYTHON_DIR.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.environ.get("PHI_PROTO_PYTHON_DIR", ""))
import grpc  # noqa: E402
from phi.v1 import gateway_pb2, gateway_pb2_grpc, tokenizer_pb2, tokenizer_pb2_grpc  # noqa: E402
from phi.v1 import worker_pb2, worker_pb2_grpc  # noqa: E402


# Fast reconnects while services start (the default backoff waits ~1 s, then longer).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 200)]


def channel(address):
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, name, argv, env=None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"phi-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def tail(self):
        with open(self.log.name, "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait(what, probe, procs, timeout=60):
    t0 = time.time()
    err = None
    while time.time() - t0 < timeout:
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}")
        try:
            if probe():
                return
        except grpc.RpcError as e:
            err = e
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout} s: {err}")


class Stack:
    """tokenizer + `workers` worker processes + one gateway (more gateways: add_gateway)."""

    def __init__(self, workers=1, gateway_env=None, gateway_args=None, worker_args=None):
        # free_port() closes its socket before the service binds, so a test running beside this
        # one can take the port in between: start again on new ports when that happens.
        for attempt in range(3):
            try:
                self._start(workers, gateway_env, gateway_args, worker_args)
                return
            except RuntimeError as e:
                self.close()
                if "port in use" not in str(e) or attempt == 2:
                    raise

    def _start(self, workers, gateway_env, gateway_args, worker_args):
        self.model = os.environ["PHI_TEST_MODEL"]
        self.procs = []
        self.tok_port = free_port()
        self.procs.append(Proc("tokenizer", [os.environ["PHI_TOKENIZER_BIN"], "--model", self.model,
                                             "--port", str(self.tok_port), "--metrics-port", "0",
                                             "--shutdown-grace-seconds", "2"]))
        self.worker_ports, self.worker_metrics_ports = [], []
        for i in range(workers):
            p, m = free_port(), free_port()
            self.worker_ports.append(p)
            self.worker_metrics_ports.append(m)
            self.procs.append(Proc(f"worker{i}", [os.environ["PHI_WORKER_BIN"], "--model", self.model,
                                                  "--port", str(p), "--metrics-port", str(m), "--threads", "1",
                                                  "--kv-cache-blocks", "1024", "--shutdown-grace-seconds", "2"]
                                   + (worker_args or [])))
        # A fresh channel per probe: a channel that found the port closed backs off for seconds.
        wait("tokenizer", lambda: tokenizer_pb2_grpc.TokenizerServiceStub(channel(f"127.0.0.1:{self.tok_port}"))
             .Info(tokenizer_pb2.InfoRequest(), timeout=1), self.procs)
        for p in self.worker_ports:
            wait("worker", lambda: worker_pb2_grpc.WorkerServiceStub(channel(f"127.0.0.1:{p}"))
                 .GetStatus(worker_pb2.GetStatusRequest(), timeout=1).ready, self.procs)
        self.port, self.http_port, self.metrics_port = self.add_gateway(gateway_env, gateway_args)

    def add_gateway(self, env=None, args=None, api_key=None):
        port, http_port, metrics_port = free_port(), free_port(), free_port()
        self.procs.append(Proc("gateway", [os.environ["PHI_GATEWAY_BIN"], "--port", str(port),
                                           "--http-port", str(http_port), "--metrics-port", str(metrics_port),
                                           "--tokenizer", f"127.0.0.1:{self.tok_port}",
                                           "--workers", ",".join(f"127.0.0.1:{p}" for p in self.worker_ports),
                                           "--health-interval-seconds", "0.2", "--shutdown-grace-seconds", "2"] + (args or []), env=env))
        md = [("authorization", "Bearer " + api_key)] if api_key else (
            [("authorization", "Bearer " + env["PHI_API_KEYS"].split(",")[0])] if env and "PHI_API_KEYS" in env
            else [])

        def ready():
            r = gateway_pb2_grpc.ChatServiceStub(channel(f"127.0.0.1:{port}")).ListModels(gateway_pb2.ListModelsRequest(), timeout=1, metadata=md)
            return any(m.ready_worker_groups == len(self.worker_ports) for m in r.models)
        wait("gateway", ready, self.procs)
        return port, http_port, metrics_port

    def chat_stub(self, port=None):
        return gateway_pb2_grpc.ChatServiceStub(channel(f"127.0.0.1:{port or self.port}"))

    def worker_stub(self, i=0):
        return worker_pb2_grpc.WorkerServiceStub(channel(f"127.0.0.1:{self.worker_ports[i]}"))

    def metrics(self, port):
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    def close(self):
        for p in reversed(self.procs):  # all drain at once
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in reversed(self.procs):
            p.stop()
            p.log.close()
