"""phi-worker as a real process on loopback, driven by a real gRPC client (grpcio):
streaming Generate with logprobs, identical greedy outputs under concurrency, prefix-cache
usage, error codes naming the field, cancellation mid-stream and by id, deadlines,
GetStatus, /metrics through promtool, SIGTERM -> exit 0.

usage: worker_service_test.py PHI_WORKER_BINARY MODEL_DIR
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import phi_testlib  # noqa: E402

phi_testlib.add_proto_path()
import grpc  # noqa: E402
from phi.v1 import common_pb2, worker_pb2, worker_pb2_grpc  # noqa: E402

BINARY = ""
MODEL = ""
PROMTOOL = "promtool"


def greedy(prompt, n, **kw):
    return worker_pb2.GenerateRequest(
        prompt_ids=prompt, stopping=common_pb2.StoppingCriteria(max_new_tokens=n, ignore_eos=True), **kw)


def collect(stub, req, timeout=60):
    tokens, msgs = [], []
    for m in stub.Generate(req, timeout=timeout):
        tokens.extend(m.token_ids)
        msgs.append(m)
    return tokens, msgs


class WorkerServiceTest(phi_testlib.ServiceTestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_service(BINARY, [f"--model={MODEL}", "--kv-cache-blocks=256", "--kv-block-size=16",
                                   "--max-waiting=64", "--threads=2"], "worker", worker_pb2_grpc.WorkerServiceStub)

    def wait_idle(self, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.stub.GetStatus(worker_pb2.GetStatusRequest())
            if s.waiting == 0 and s.running == 0 and s.kv_blocks_free == s.kv_blocks_total:
                return s
            time.sleep(0.05)
        self.fail(f"worker not idle: {s}")

    def test_01_status_ready(self):
        s = self.stub.GetStatus(worker_pb2.GetStatusRequest())
        self.assertTrue(s.ready)
        self.assertEqual(s.kv_blocks_total, 256)
        self.assertEqual(s.kv_block_size, 16)
        self.assertEqual(s.max_context_tokens, 2048)
        self.assertEqual(s.world_size, 1)
        self.assertEqual(s.model, os.path.basename(MODEL.rstrip("/")))
        self.assertGreater(s.vocab_size, 0)

    def test_02_generate_streams_tokens_then_usage(self):
        # The service merges whatever the engine produced while the previous message was being
        # written, so a reply only arrives in several messages when generating it takes longer
        # than a write: 12 tokens of the tiny model (~1 ms) came as one message once on a loaded
        # 2-core machine; 160 tokens take tens of ms.
        n = 160
        req = greedy(list(range(10, 40)), n, logprobs=True, top_logprobs=3, request_id="stream-1")
        tokens, msgs = collect(self.stub, req)
        self.assertEqual(len(tokens), n)
        self.assertGreater(len(msgs), 1, "tokens were not streamed")
        last = msgs[-1]
        self.assertEqual(last.finish_reason, common_pb2.FINISH_REASON_LENGTH)
        self.assertEqual(last.request_id, "stream-1")
        self.assertEqual(last.usage.prompt_tokens, 30)
        self.assertEqual(last.usage.completion_tokens, n)
        self.assertGreater(last.timings.total_seconds, 0)
        self.assertGreaterEqual(last.timings.total_seconds, last.timings.time_to_first_token_seconds)
        lps = [lp for m in msgs for lp in m.logprobs]
        self.assertEqual(len(lps), n)
        for tok, lp in zip(tokens, lps):
            self.assertEqual(lp.token.token_id, tok)
            self.assertLessEqual(lp.token.logprob, 0.0)
            self.assertEqual(len(lp.top), 3)
            self.assertEqual(lp.top[0].token_id, tok)  # greedy

    def test_03_identical_greedy_requests_under_concurrency(self):
        prompt = [7, 8, 9, 10, 11, 12, 13] * 5
        alone, _ = collect(self.stub, greedy(prompt, 20))
        results = [None] * 12

        def run(i):
            results[i] = collect(self.stub, greedy(prompt if i % 2 == 0 else prompt[:-i], 20))[0]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(0, 12, 2):
            self.assertEqual(results[i], alone, f"request {i}")

    def test_04_seeded_sampling_is_reproducible_and_reports_seed(self):
        req = greedy(list(range(100, 150)), 16)
        req.sampling.CopyFrom(common_pb2.SamplingParams(temperature=1.0, top_p=0.9, seed=1234))
        a, ma = collect(self.stub, req)
        b, _ = collect(self.stub, req)
        self.assertEqual(a, b)
        self.assertEqual(ma[-1].seed, 1234)
        req.sampling.ClearField("seed")
        _, mc = collect(self.stub, req)
        self.assertNotEqual(mc[-1].seed, 0)

    def test_05_prefix_cache_reports_cached_tokens(self):
        system = list(range(200, 264))  # 4 blocks
        a, _ = collect(self.stub, greedy(system + [1], 4))
        b, msgs = collect(self.stub, greedy(system + [2, 3], 4))
        self.assertEqual(msgs[-1].usage.cached_prompt_tokens, 64)
        s = self.stub.GetStatus(worker_pb2.GetStatusRequest())
        self.assertGreater(s.prefix_cache_hit_rate, 0)
        self.assertGreater(len(s.cached_block_hashes), 0)

    def test_05b_prompt_logprobs_agree_with_generation_logprobs(self):
        # Teacher forcing: scoring prompt + generated tokens must give, at the generated
        # positions, the logprobs reported while generating them (prefill vs decode rounding).
        prompt = list(range(300, 340))
        tokens, msgs = collect(self.stub, greedy(prompt, 6, logprobs=True))
        gen = [lp.token.logprob for m in msgs for lp in m.logprobs]
        _, scored = collect(self.stub, greedy(prompt + tokens, 1, prompt_logprobs=True, top_logprobs=2))
        plp = list(scored[0].prompt_logprobs)
        self.assertEqual(len(plp), len(prompt) + len(tokens) - 1)
        for i, tok in enumerate(tokens):
            entry = plp[len(prompt) - 1 + i]
            self.assertEqual(entry.token.token_id, tok)
            self.assertAlmostEqual(entry.token.logprob, gen[i], delta=2e-3)
            self.assertEqual(len(entry.top), 2)
            self.assertEqual(entry.top[0].token_id, tok)  # greedy chose the most likely

    def test_06_invalid_requests_name_the_field(self):
        cases = [
            (worker_pb2.GenerateRequest(), "prompt_ids"),
            (greedy([1, 10 ** 6], 4), "prompt_ids[1]"),
            (worker_pb2.GenerateRequest(prompt_ids=[1], sampling=common_pb2.SamplingParams(temperature=-1)),
             "sampling.temperature"),
            (worker_pb2.GenerateRequest(prompt_ids=[1], sampling=common_pb2.SamplingParams(top_p=1.5)),
             "sampling.top_p"),
            (greedy([1], 5000), "stopping.max_new_tokens"),
            (greedy([1] * 2048, 1), "prompt_ids"),
        ]
        for req, field in cases:
            with self.assertRaises(grpc.RpcError) as ctx:
                collect(self.stub, req)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, field)
            self.assertIn(field, ctx.exception.details())

    def test_07_cancel_mid_stream_frees_blocks(self):
        call = self.stub.Generate(greedy(list(range(5, 105)), 1500), timeout=60)
        got = 0
        for m in call:
            got += len(m.token_ids)
            if got >= 3:
                break
        call.cancel()
        s = self.wait_idle()
        self.assertEqual(s.kv_blocks_free, 256)

    def test_08_deadline_ends_the_request(self):
        # 1900 tokens take the tiny model >= ~130 ms on any machine this runs on; the callback
        # worker streams them fast enough that a 300 ms deadline was sometimes met.
        with self.assertRaises(grpc.RpcError) as ctx:
            collect(self.stub, greedy(list(range(5, 50)), 1900), timeout=0.05)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.wait_idle()

    def test_09_cancel_by_id(self):
        call = self.stub.Generate(greedy([1, 2, 3], 1900, request_id="victim"), timeout=60)
        it = iter(call)
        next(it)
        self.stub.Cancel(worker_pb2.CancelRequest(request_id="victim"))
        msgs = list(it)
        self.assertEqual(msgs[-1].finish_reason, common_pb2.FINISH_REASON_CANCELLED)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.Cancel(worker_pb2.CancelRequest(request_id="victim"))
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.wait_idle()

    def test_10_metrics(self):
        text = self.svc.scrape()
        for name in ("phi_worker_requests_total", "phi_worker_queue_time_seconds",
                     "phi_worker_time_to_first_token_seconds", "phi_worker_inter_token_latency_seconds",
                     "phi_worker_e2e_latency_seconds", "phi_worker_step_duration_seconds", "phi_worker_batch_size",
                     "phi_worker_prompt_tokens_total", "phi_worker_generated_tokens_total",
                     "phi_worker_cached_prompt_tokens_total", "phi_worker_prefix_cache_queries_total",
                     "phi_worker_prefix_cache_hits_total", "phi_worker_preemptions_total",
                     "phi_worker_requests_waiting", "phi_worker_requests_running", "phi_worker_kv_blocks_used",
                     "phi_worker_kv_blocks_capacity", "phi_worker_ready"):
            self.assertIn(f"\n# TYPE {name} ", "\n" + text, name)
        self.assertIn("phi_worker_ready 1", text)
        self.assertIn('phi_worker_requests_total{finish_reason="cancelled"}', text)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        report = (check.stdout.decode() + check.stderr.decode()).strip()
        self.assertEqual(check.returncode, 0, report)

    def test_99_sigterm_drains_in_flight_and_exits_0(self):
        call = self.stub.Generate(greedy([4, 5, 6], 40), timeout=60)
        it = iter(call)
        first = next(it)
        rc_holder = {}
        t = threading.Thread(target=lambda: rc_holder.setdefault("rc", self.svc.terminate()))
        t.start()
        rest = list(it)  # the in-flight request finishes during the drain
        t.join()
        tokens = list(first.token_ids) + [x for m in rest for x in m.token_ids]
        self.assertEqual(len(tokens), 40)
        if rc_holder["rc"] != 0:
            with open(self.svc.log_path, encoding="utf-8", errors="replace") as f:
                self.fail(f"exit code {rc_holder['rc']} after SIGTERM:\n{f.read()}")


if __name__ == "__main__":
    BINARY, MODEL = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    unittest.main(verbosity=2)
