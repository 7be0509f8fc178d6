"""phi-worker as a tensor-parallel CPU group: two processes on loopback (--rank 0/1
--world-size 2 --leader), driven by a real gRPC client, give the same greedy tokens (and
logprobs within 1e-4) as one process; seeded sampling matches too. Killing the follower
mid-stream ends the stream with UNAVAILABLE within 5 s and the leader exits non-zero; a
rank that never arrives fails the group's start naming it.

usage: worker_group_test.py PHI_WORKER_BINARY MODEL_DIR
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import phi_testlib  # noqa: E402

phi_testlib.add_proto_path()
import grpc  # noqa: E402

_health_dir = os.path.join(os.environ["PHI_PROTO_PYTHON_DIR"], "grpc")
if _health_dir not in grpc.__path__:
    grpc.__path__.append(_health_dir)
from phi.v1 import common_pb2, worker_pb2, worker_pb2_grpc  # noqa: E402

BINARY = ""
MODEL = ""
COMMON = ["--dtype=f32", "--kv-cache-blocks=128", "--kv-block-size=16", "--threads=1"]
PROMPTS = [[5, 17, 33, 2, 91, 60, 8], [44, 3, 12], list(range(100, 160)), [7]]


def request(prompt, n, logprobs=False, seed=None):
    sampling = common_pb2.SamplingParams(temperature=0.8, top_k=20, seed=seed) if seed is not None else None
    return worker_pb2.GenerateRequest(
        prompt_ids=prompt, stopping=common_pb2.StoppingCriteria(max_new_tokens=n, ignore_eos=True),
        logprobs=logprobs, top_logprobs=3 if logprobs else 0, sampling=sampling)


def collect(stub, req, timeout=120):
    tokens, logprobs = [], []
    for m in stub.Generate(req, timeout=timeout):
        tokens.extend(m.token_ids)
        logprobs.extend(p.token.logprob for p in m.logprobs)
    return tokens, logprobs


def start_group(n, extra=()):
    leader = f"127.0.0.1:{phi_testlib.free_port()}"
    return [phi_testlib.Service(BINARY, [f"--model={MODEL}", *COMMON, f"--rank={r}", f"--world-size={n}",
                                         f"--leader={leader}", "--tp-timeout-ms=3000", *extra],
                                name=f"tp{n}-rank{r}") for r in range(n)]


class WorkerGroupTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.single = phi_testlib.Service(BINARY, [f"--model={MODEL}", *COMMON], name="tp1")
        cls.group = start_group(2)
        for s in [cls.single, *cls.group]:
            s.wait_healthy()
        cls.channels = [grpc.insecure_channel(s.address) for s in (cls.single, cls.group[0])]
        cls.one, cls.two = (worker_pb2_grpc.WorkerServiceStub(c) for c in cls.channels)

    @classmethod
    def tearDownClass(cls):
        for c in cls.channels:
            c.close()
        for s in [cls.single, *cls.group]:
            s.kill()

    def test_01_status_reports_world_size(self):
        self.assertEqual(self.two.GetStatus(worker_pb2.GetStatusRequest()).world_size, 2)
        self.assertEqual(self.one.GetStatus(worker_pb2.GetStatusRequest()).world_size, 1)

    def test_02_greedy_identical_to_one_rank(self):
        for prompt in PROMPTS:
            t1, l1 = collect(self.one, request(prompt, 24, logprobs=True))
            t2, l2 = collect(self.two, request(prompt, 24, logprobs=True))
            self.assertEqual(t1, t2, f"prompt {prompt[:8]}")
            self.assertEqual(len(l1), len(l2))
            for a, b in zip(l1, l2):
                self.assertAlmostEqual(a, b, delta=1e-4)

    def test_03_concurrent_and_seeded_identical(self):
        reqs = [request(p, 16) for p in PROMPTS] + [request(p, 16, seed=7 + i) for i, p in enumerate(PROMPTS)]
        want = [collect(self.one, r)[0] for r in reqs]
        got = [None] * len(reqs)

        def run(i):
            got[i] = collect(self.two, reqs[i])[0]
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(got, want)

    def test_zz_follower_killed_mid_stream(self):
        outcome = {}

        def stream():
            try:
                n = 0
                for m in self.two.Generate(request(PROMPTS[0], 1900), timeout=120):
                    n += len(m.token_ids)
                    outcome.setdefault("first_token", time.time())
                outcome["code"] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                outcome["code"] = e.code()
                outcome["details"] = e.details()
            outcome["end"] = time.time()
        t = threading.Thread(target=stream)
        t.start()
        deadline = time.time() + 30
        while "first_token" not in outcome and time.time() < deadline:
            time.sleep(0.01)
        self.assertIn("first_token", outcome, "no token streamed")
        killed = time.time()
        self.group[1].proc.send_signal(signal.SIGKILL)
        t.join(30)
        self.assertFalse(t.is_alive(), "stream still open 30 s after the follower died")
        self.assertEqual(outcome["code"], grpc.StatusCode.UNAVAILABLE, outcome)
        self.assertLess(outcome["end"] - killed, 5.0, outcome)
        leader = self.group[0]
        code = leader.proc.wait(timeout=30)
        self.assertNotEqual(code, 0, leader.log())
        self.assertIn("group_failed", leader.log())


class IdleGroupTest(unittest.TestCase):
    def test_follower_killed_while_idle(self):
        group = start_group(2)
        try:
            for s in group:
                s.wait_healthy()
            group[1].proc.send_signal(signal.SIGKILL)
            killed = time.time()
            code = group[0].proc.wait(timeout=30)
            self.assertEqual(code, 1, group[0].log())
            self.assertLess(time.time() - killed, 5.0, group[0].log())
            self.assertIn("group_failed", group[0].log())
        finally:
            for s in group:
                s.kill()


class GroupStartTest(unittest.TestCase):
    def test_missing_rank_named_in_message(self):
        port = phi_testlib.free_port()
        svc = phi_testlib.Service(BINARY, [f"--model={MODEL}", *COMMON, "--rank=0", "--world-size=3",
                                           f"--leader=127.0.0.1:{port}", "--tp-join-timeout-s=2"], name="tp3-alone")
        try:
            code = svc.proc.wait(timeout=60)
            self.assertEqual(code, 1, svc.log())
            self.assertIn("rank(s) 1, 2 of 3 did not arrive", svc.log())
        finally:
            svc.kill()


if __name__ == "__main__":
    BINARY, MODEL = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0], "-v"])
