"""phi-worker as a tensor-parallel CPU group (2 processes on loopback) serving LoRA adapters:
an adapter given with --lora and one loaded over gRPC give the same greedy tokens, alone and
batched with the base, as one process with the same adapters. A follower that cannot read an
adapter (started with a lower --max-lora-rank) makes LoadAdapter fail naming rank 1, the
adapter stays unregistered, and the group keeps serving.

usage: worker_lora_tp_test.py PHI_WORKER_BINARY MODEL_DIR
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import phi_testlib  # noqa: E402

phi_testlib.add_proto_path()
import grpc  # noqa: E402
from phi.v1 import common_pb2, worker_pb2, worker_pb2_grpc  # noqa: E402

BINARY = ""
MODEL = ""
COMMON = ["--dtype=f32", "--kv-cache-blocks=128", "--kv-block-size=16", "--threads=1", "--max-loras=2"]
PROMPTS = [[5, 17, 33, 2, 91, 60, 8], [44, 3, 12], list(range(100, 160))]


def greedy(prompt, n, adapter=""):
    return worker_pb2.GenerateRequest(
        prompt_ids=prompt, stopping=common_pb2.StoppingCriteria(max_new_tokens=n, ignore_eos=True), adapter=adapter)


def collect(stub, req, timeout=120):
    tokens = []
    for m in stub.Generate(req, timeout=timeout):
        tokens.extend(m.token_ids)
    return tokens


def start_group(extra_by_rank):
    leader = f"127.0.0.1:{phi_testlib.free_port()}"
    n = len(extra_by_rank)
    return [phi_testlib.Service(BINARY, [f"--model={MODEL}", *COMMON, f"--rank={r}", f"--world-size={n}",
                                         f"--leader={leader}", "--tp-timeout-ms=5000", *extra],
                                name=f"lora-tp{n}-rank{r}") for r, extra in enumerate(extra_by_rank)]


class LoraGroupTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="phi-lora-tp-")
        cls.a = phi_testlib.make_lora(MODEL, os.path.join(cls.tmp, "a"), 8, 11)
        cls.b = phi_testlib.make_lora(MODEL, os.path.join(cls.tmp, "b"), 4, 12, targets="q_proj,v_proj,fc2")
        start = [f"--lora=a={cls.a}"]
        cls.single = phi_testlib.Service(BINARY, [f"--model={MODEL}", *COMMON, *start], name="lora-tp1")
        cls.group = start_group([start, start])
        # Rank 1 refuses ranks over 4: adapter a (rank 8) is readable on rank 0 only.
        cls.strict = start_group([[], ["--max-lora-rank=4"]])
        cls.services = [cls.single, *cls.group, *cls.strict]
        for s in cls.services:
            s.wait_healthy()
        cls.channels = [grpc.insecure_channel(s.address) for s in (cls.single, cls.group[0], cls.strict[0])]
        cls.one, cls.two, cls.split = (worker_pb2_grpc.WorkerServiceStub(c) for c in cls.channels)

    @classmethod
    def tearDownClass(cls):
        for c in cls.channels:
            c.close()
        for s in cls.services:
            s.kill()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_01_same_tokens_as_one_rank(self):
        for stub in (self.one, self.two):
            stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="b", path=self.b), timeout=60)
        status = self.two.GetStatus(worker_pb2.GetStatusRequest())
        self.assertEqual(status.world_size, 2)
        self.assertEqual(status.max_adapter_slots, 2)
        self.assertEqual(sorted(a.name for a in status.adapters), ["a", "b"])
        for prompt in PROMPTS:
            base = collect(self.one, greedy(prompt, 20))
            for adapter in ("a", "b"):
                t1 = collect(self.one, greedy(prompt, 20, adapter))
                t2 = collect(self.two, greedy(prompt, 20, adapter))
                self.assertEqual(t2, t1, f"adapter {adapter} prompt {prompt[:5]}")
                self.assertNotEqual(t1, base, f"adapter {adapter} prompt {prompt[:5]}")

    def test_02_mixed_batch_same_as_one_rank(self):
        names = ["", "a", "b"]
        alone = {n: collect(self.one, greedy(PROMPTS[0], 16, n)) for n in names}
        results = {}
        threads = [threading.Thread(target=lambda n=n, i=i: results.__setitem__(
            (n, i), collect(self.two, greedy(PROMPTS[0], 16, n)))) for n in names for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for (name, i), tokens in results.items():
            self.assertEqual(tokens, alone[name], f"adapter {name!r} run {i}")

    def test_03_a_follower_that_cannot_read_it_fails_the_load(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.split.LoadAdapter(worker_pb2.LoadAdapterRequest(name="a", path=self.a), timeout=60)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, e.exception.details())
        self.assertIn("rank 1: ", e.exception.details())
        self.assertIn("--max-lora-rank", e.exception.details())
        self.assertEqual(len(self.split.GetStatus(worker_pb2.GetStatusRequest()).adapters), 0)
        # The group still serves the base and adapters every rank can read.
        self.assertEqual(len(collect(self.split, greedy(PROMPTS[1], 8))), 8)
        self.split.LoadAdapter(worker_pb2.LoadAdapterRequest(name="b", path=self.b), timeout=60)
        self.assertEqual(collect(self.split, greedy(PROMPTS[1], 12, "b")), collect(self.one, greedy(PROMPTS[1], 12, "b")))
        for s in self.strict:
            self.assertIsNone(s.proc.poll(), s.log()[-3000:])


if __name__ == "__main__":
    BINARY, MODEL = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    unittest.main(verbosity=2)
