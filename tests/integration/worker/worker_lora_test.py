"""phi-worker serving LoRA adapters, as a real process on loopback driven by grpcio, with
random PEFT adapters that peft itself writes (tools/make_lora.py) for the tiny model:
--lora at start, LoadAdapter / GetStatus / UnloadAdapter, Generate through an adapter
(greedy tokens unlike the base's and the same on every run, alone or batched with the base
and another adapter), unknown adapters NOT_FOUND, bad LoadAdapter calls refused by code while
another stream keeps running, and bad --lora flags exiting 2 naming the flag.

usage: worker_lora_test.py PHI_WORKER_BINARY MODEL_DIR
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
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
PROMPT = [5, 17, 33, 2, 91, 60, 8, 120, 7]


def greedy(prompt, n, adapter=""):
    return worker_pb2.GenerateRequest(
        prompt_ids=prompt, stopping=common_pb2.StoppingCriteria(max_new_tokens=n, ignore_eos=True), adapter=adapter)


def collect(stub, req, timeout=120):
    tokens = []
    for m in stub.Generate(req, timeout=timeout):
        tokens.extend(m.token_ids)
    return tokens


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


class WorkerLoraTest(phi_testlib.ServiceTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="phi-lora-test-")
        cls.start_dir = phi_testlib.make_lora(MODEL, os.path.join(cls.tmp, "start"), 8, 1)
        cls.dpo_dir = phi_testlib.make_lora(MODEL, os.path.join(cls.tmp, "dpo"), 4, 2, targets="attention")
        cls.big_dir = phi_testlib.make_lora(MODEL, os.path.join(cls.tmp, "big"), 32, 3)  # over --max-lora-rank 16
        cls.ia3_dir = os.path.join(cls.tmp, "ia3")
        shutil.copytree(cls.dpo_dir, cls.ia3_dir)
        with open(os.path.join(cls.ia3_dir, "adapter_config.json")) as f:
            config = json.load(f)
        config["peft_type"] = "IA3"
        with open(os.path.join(cls.ia3_dir, "adapter_config.json"), "w") as f:
            json.dump(config, f)
        cls.start_service(BINARY, [f"--model={MODEL}", "--kv-cache-blocks=256", "--kv-block-size=16", "--threads=2",
                                   "--max-loras=2", "--max-lora-rank=16", f"--lora=start={cls.start_dir}"],
                          "worker-lora", worker_pb2_grpc.WorkerServiceStub)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def status(self):
        return self.stub.GetStatus(worker_pb2.GetStatusRequest())

    def load(self, name, path):
        return self.stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name=name, path=path), timeout=60)

    def unload(self, name):
        return self.stub.UnloadAdapter(worker_pb2.UnloadAdapterRequest(name=name), timeout=60)

    def test_01_start_adapter_is_listed(self):
        s = self.status()
        self.assertTrue(s.ready)
        self.assertEqual(s.max_adapter_slots, 2)
        by_name = {a.name: a for a in s.adapters}
        self.assertIn("start", by_name)
        a = by_name["start"]
        self.assertEqual(a.path, self.start_dir)
        self.assertEqual(a.rank, 8)
        self.assertEqual(list(a.target_modules), ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])
        self.assertEqual(a.requests, 0)

    def test_02_adapter_changes_tokens_deterministically(self):
        base = collect(self.stub, greedy(PROMPT, 24))
        start = collect(self.stub, greedy(PROMPT, 24, "start"))
        again = collect(self.stub, greedy(PROMPT, 24, "start"))
        self.assertEqual(len(start), 24)
        self.assertNotEqual(start, base)
        self.assertEqual(start, again)
        self.assertEqual(collect(self.stub, greedy(PROMPT, 24)), base)

    def test_03_load_generate_mix_unload(self):
        loaded = self.load("dpo", self.dpo_dir)
        self.assertEqual(loaded.adapter.name, "dpo")
        self.assertEqual(loaded.adapter.rank, 4)
        self.assertEqual(list(loaded.adapter.target_modules), ["q_proj", "k_proj", "v_proj", "dense"])
        self.assertEqual(sorted(a.name for a in self.status().adapters), ["dpo", "start"])
        alone = {name: collect(self.stub, greedy(PROMPT, 24, name)) for name in ("", "start", "dpo")}
        self.assertNotEqual(alone["dpo"], alone[""])
        self.assertNotEqual(alone["dpo"], alone["start"])
        # Base and both adapters in one batch: each as alone, token for token.
        results = {}
        threads = [threading.Thread(target=lambda n=n, i=i: results.__setitem__((n, i), collect(
            self.stub, greedy(PROMPT, 24, n)))) for n in ("", "start", "dpo") for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for (name, i), tokens in results.items():
            self.assertEqual(tokens, alone[name], f"adapter {name!r} run {i}")
        self.unload("dpo")
        self.assertEqual([a.name for a in self.status().adapters], ["start"])
        code, details = code_of(lambda: collect(self.stub, greedy(PROMPT, 4, "dpo")))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        self.assertEqual(code_of(lambda: self.unload("dpo"))[0], grpc.StatusCode.NOT_FOUND)

    def test_04_unknown_adapter_is_not_found(self):
        code, details = code_of(lambda: collect(self.stub, greedy(PROMPT, 4, "nope")))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        self.assertIn("nope", details)
        code, details = code_of(lambda: collect(self.stub, greedy(PROMPT, 4, "no/pe")))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertTrue(details.startswith("adapter: "), details)

    def test_05_bad_loads_are_refused_while_a_stream_runs(self):
        expected = collect(self.stub, greedy(list(range(30, 60)), 300))
        out = {}
        stream = threading.Thread(target=lambda: out.setdefault("tokens", collect(
            self.stub, greedy(list(range(30, 60)), 300))))
        stream.start()
        cases = [
            ("gone", os.path.join(self.tmp, "missing"), grpc.StatusCode.NOT_FOUND, "adapter_config.json"),
            ("a b", self.dpo_dir, grpc.StatusCode.INVALID_ARGUMENT, "name: "),
            ("", self.dpo_dir, grpc.StatusCode.INVALID_ARGUMENT, "name: "),
            (os.path.basename(MODEL.rstrip("/")), self.dpo_dir, grpc.StatusCode.INVALID_ARGUMENT, "base model"),
            ("ia3", self.ia3_dir, grpc.StatusCode.INVALID_ARGUMENT, "IA3"),
            ("big", self.big_dir, grpc.StatusCode.INVALID_ARGUMENT, "16"),
            ("start", self.dpo_dir, grpc.StatusCode.ALREADY_EXISTS, "start"),
            ("long", "/" + "p" * 4096, grpc.StatusCode.INVALID_ARGUMENT, "path: "),
        ]
        for name, path, want, fragment in cases:
            code, details = code_of(lambda: self.load(name, path))
            self.assertEqual(code, want, f"{name!r} {path[:80]}: {details}")
            self.assertIn(fragment, details, f"{name!r}")
        stream.join()
        self.assertEqual(out.get("tokens"), expected)
        self.assertEqual([a.name for a in self.status().adapters], ["start"])


class LoraFlagTest(unittest.TestCase):
    """A bad --lora stops the worker before it serves: exit 2, the flag and the problem."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="phi-lora-flag-")
        cls.good = phi_testlib.make_lora(MODEL, os.path.join(cls.tmp, "good"), 4, 7)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_worker(self, *flags):
        port, metrics = phi_testlib.free_port(), phi_testlib.free_port()
        return subprocess.run([BINARY, f"--model={MODEL}", "--host=127.0.0.1", f"--port={port}",
                               f"--metrics-port={metrics}", "--kv-cache-mb=16", *flags],
                              capture_output=True, text=True, timeout=120)

    def test_bad_lora_flags_exit_2_naming_the_flag(self):
        missing = os.path.join(self.tmp, "missing")
        cases = [
            ([f"--lora=x={missing}"], f"--lora x={missing}", "adapter_config.json"),
            (["--lora=noequals"], "--lora noequals", "NAME=PATH"),
            ([f"--lora=a/b={self.good}"], "--lora a/b=", "NAME: byte 1"),
            ([f"--lora=a={self.good}", f"--lora=a={self.good}"], "--lora a=", "given twice"),
            ([f"--lora=a={self.good}", "--max-loras=0"], "--lora", "--max-loras 0"),
            ([f"--lora=a={self.good}", "--max-lora-rank=2"], f"--lora a={self.good}", "rank"),
        ]
        for flags, flag_text, problem in cases:
            r = self.run_worker(*flags)
            self.assertEqual(r.returncode, 2, f"{flags}: {r.stderr[-2000:]}")
            said = [line for line in r.stderr.splitlines() if line.startswith("phi-worker: ")]
            self.assertEqual(len(said), 1, r.stderr[-2000:])
            self.assertIn(flag_text, said[0], flags)
            self.assertIn(problem, said[0], flags)


if __name__ == "__main__":
    BINARY, MODEL = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    unittest.main(verbosity=2)
