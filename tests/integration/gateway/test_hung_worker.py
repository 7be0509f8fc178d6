#!/usr/bin/env python3
"""A hung worker (SIGSTOP) behind real gateways: requests in flight on it before their first token
are retried on the other worker, it is out of rotation within 5 s, and back after SIGCONT.

Two gateways share the stack: one with the defaults (keepalive pings find the stopped worker),
one with pings off and a short --first-token-timeout-seconds (the timeout finds it)."""
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import gateway_pb2  # noqa: E402
from phi.v1 import common_pb2  # noqa: E402

OUT_WITHIN = 5.0  # seconds, the bound for a hung worker to leave rotation


def request(n=8):
    return gateway_pb2.ChatRequest(
        messages=[gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_USER, content="Tell me about owls.")],
        stopping=common_pb2.StoppingCriteria(max_new_tokens=n))


def counter(metrics_text, name):
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


class HungWorkerTest(unittest.TestCase):
    def setUp(self):
        # The production defaults on gateway A (health every 1 s, 2 s health timeout, 1 s pings).
        self.s = stack.Stack(workers=2, gateway_args=["--health-interval-seconds", "1"])
        self.gw_a = self.s.port
        self.gw_b, _, self.metrics_b = self.s.add_gateway(args=[
            "--health-interval-seconds", "1", "--worker-keepalive-seconds", "0",
            "--first-token-timeout-seconds", "1.5"])
        self.worker0 = self.s.procs[1].proc  # procs: tokenizer, worker0, worker1, gateways
        self.stopped = False

    def tearDown(self):
        if self.stopped:
            self.worker0.send_signal(signal.SIGCONT)
        self.s.close()

    def ready_groups(self, port):
        r = self.s.chat_stub(port).ListModels(gateway_pb2.ListModelsRequest(), timeout=2)
        return r.models[0].ready_worker_groups if r.models else 0

    def stream(self, port, results, i):
        t0 = time.time()
        try:
            text = "".join(m.text_delta for m in self.s.chat_stub(port).ChatStream(request(), timeout=20))
            results[i] = ("ok", time.time() - t0, text)
        except stack.grpc.RpcError as e:
            results[i] = (e.code().name, time.time() - t0, e.details())

    def concurrent(self, port, n):
        results = [None] * n
        threads = [threading.Thread(target=self.stream, args=(port, results, i)) for i in range(n)]
        for t in threads:
            t.start()
        return threads, results

    def wait_for(self, what, pred, limit):
        t0 = time.time()
        while time.time() - t0 < limit:
            if pred():
                return time.time() - t0
            time.sleep(0.05)
        self.fail(f"{what}: not within {limit} s")

    def test_stopped_worker_is_routed_around_and_comes_back(self):
        t_start = time.time()
        for port in (self.gw_a, self.gw_b):
            self.assertEqual(self.ready_groups(port), 2)
            list(self.s.chat_stub(port).ChatStream(request(2), timeout=20))

        # Requests sent just after the stop: both workers are still in rotation, so about half
        # land on the stopped one and wait there without a token.
        self.worker0.send_signal(signal.SIGSTOP)
        self.stopped = True
        t_stop = time.time()
        threads_a, results_a = self.concurrent(self.gw_a, 4)
        threads_b, results_b = self.concurrent(self.gw_b, 4)

        self.wait_for("gateway A takes the stopped worker out", lambda: self.ready_groups(self.gw_a) == 1, 10)
        out_a = time.time() - t_stop
        self.wait_for("gateway B takes the stopped worker out", lambda: self.ready_groups(self.gw_b) == 1, 10)
        out_b = time.time() - t_stop
        print(f"out of rotation after SIGSTOP: gateway A {out_a:.2f} s, gateway B {out_b:.2f} s", flush=True)
        self.assertLess(out_a, OUT_WITHIN)
        self.assertLess(out_b, OUT_WITHIN)
        m = self.s.metrics(self.s.metrics_port)
        self.assertEqual(counter(m, 'phi_gateway_worker_groups{state="unreachable"}'), 1, m)

        for t in threads_a + threads_b:
            t.join(30)
        for name, results in (("A", results_a), ("B", results_b)):
            print(f"gateway {name}: " + ", ".join(f"{r[0]} {r[1]:.2f} s" for r in results), flush=True)
            for r in results:
                self.assertEqual(r[0], "ok", f"gateway {name}: {r}")
                self.assertTrue(r[2])
        # Requests that were on the stopped worker were retried: through the dropped connection on
        # A (keepalive), through the first-token timeout on B.
        with open(self.s.procs[3].log.name, encoding="utf-8", errors="replace") as f:
            log_a = f.read()
        addr0 = f"127.0.0.1:{self.s.worker_ports[0]}"
        retries_a = log_a.count('"worker_retry"')
        hung_b = counter(self.s.metrics(self.metrics_b), "phi_gateway_worker_hung_attempts_total")
        print(f"retries on A: {retries_a}, hung attempts on B: {hung_b:.0f}", flush=True)
        self.assertIn(addr0, log_a)
        self.assertGreaterEqual(retries_a, 1, log_a[-3000:])
        self.assertGreaterEqual(hung_b, 1)
        self.assertEqual(counter(m, "phi_gateway_worker_hung_attempts_total"), 0)  # A never waited that long

        # While stopped, new requests go to the other worker at once.
        threads, results = self.concurrent(self.gw_a, 4)
        for t in threads:
            t.join(30)
        for r in results:
            self.assertEqual(r[0], "ok", r)
            self.assertLess(r[1], 5, r)

        self.worker0.send_signal(signal.SIGCONT)
        self.stopped = False
        t_cont = time.time()
        for port in (self.gw_a, self.gw_b):
            self.wait_for("back in rotation after SIGCONT", lambda: self.ready_groups(port) == 2, 10)
        print(f"back in rotation after SIGCONT: {time.time() - t_cont:.2f} s", flush=True)
        served_before = counter(self.s.metrics(self.s.worker_metrics_ports[0]), "phi_worker_requests_total")
        for _ in range(4):
            threads, results = self.concurrent(self.gw_a, 2)
            for t in threads:
                t.join(30)
            for r in results:
                self.assertEqual(r[0], "ok", r)
        served_after = counter(self.s.metrics(self.s.worker_metrics_ports[0]), "phi_worker_requests_total")
        self.assertGreater(served_after, served_before)  # the resumed worker serves again
        self.assertLess(time.time() - t_start, 60)


if __name__ == "__main__":
    unittest.main(verbosity=2)
