"""phi-worker over real gRPC with constrained decoding on a random tiny model: JSON schemas,
regexes, grammars and choices compiled by the worker (xgrammar) give valid outputs under
temperature 1.0 with many seeds; bad grammars are INVALID_ARGUMENT naming the field before
any token; logit_bias forces and forbids; min_new_tokens holds eos back; identical prompts
sent together (the gateway's n choices) compute their prompt once.

usage: worker_structured_output_test.py PHI_WORKER_BINARY MODEL_DIR
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import phi_testlib  # noqa: E402

phi_testlib.add_proto_path()
import grpc  # noqa: E402
import jsonschema  # noqa: E402
import tokenizers  # noqa: E402
from phi.v1 import common_pb2, worker_pb2, worker_pb2_grpc  # noqa: E402

BINARY = ""
MODEL = ""
SEEDS = 12
BLOCK = 16

SCHEMAS = [
    {"type": "object",
     "properties": {"name": {"type": "string", "maxLength": 6},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3}},
     "required": ["name", "age", "tags"], "additionalProperties": False},
    {"type": "object",
     "properties": {"ok": {"type": "boolean"},
                    "point": {"type": "object",
                              "properties": {"x": {"type": "integer", "minimum": -5, "maximum": 5},
                                             "y": {"enum": ["up", "down"]}},
                              "required": ["x", "y"], "additionalProperties": False}},
     "required": ["ok", "point"], "additionalProperties": False},
    {"type": "object",
     "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"},
                    "level": {"enum": [1, 2, 3]}},
     "required": ["code", "level"], "additionalProperties": False},
]


def request(prompt, max_new, seed, constraint=None, **stopping):
    sampling = common_pb2.SamplingParams(temperature=1.0, seed=seed)
    if constraint is not None:
        sampling.constraint.CopyFrom(constraint)
    return worker_pb2.GenerateRequest(
        prompt_ids=prompt, sampling=sampling,
        stopping=common_pb2.StoppingCriteria(max_new_tokens=max_new, **stopping))


class WorkerStructuredOutputTest(phi_testlib.ServiceTestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_service(BINARY, [f"--model={MODEL}", "--kv-cache-blocks=512", f"--kv-block-size={BLOCK}",
                                   "--threads=2"], "worker-grammar", worker_pb2_grpc.WorkerServiceStub)
        cls.tokenizer = tokenizers.Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
        cls.prompt = cls.tokenizer.encode("Answer in JSON:").ids

    def generate(self, req, timeout=120):
        tokens, last = [], None
        for m in self.stub.Generate(req, timeout=timeout):
            tokens.extend(m.token_ids)
            last = m
        return tokens, last

    def text(self, tokens):
        return self.tokenizer.decode(tokens, skip_special_tokens=False)

    def metric(self, name):
        for line in self.svc.scrape().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        self.fail(f"{name} not exported")

    def assert_all_valid(self, constraint, check, max_new=256, bias=None):
        for seed in range(SEEDS):
            req = request(self.prompt, max_new, seed, constraint)
            for token, b in (bias or {}).items():
                req.sampling.logit_bias[token] = b
            tokens, last = self.generate(req)
            text = self.text(tokens)
            self.assertEqual(last.finish_reason, common_pb2.FINISH_REASON_STOP, f"seed {seed}: {text!r}")
            check(text)

    def test_json_schemas_validate_under_sampling(self):
        for schema in SCHEMAS:
            c = common_pb2.Constraint(json_schema=json.dumps(schema))
            self.assert_all_valid(c, lambda text, s=schema: jsonschema.validate(json.loads(text), s))

    def test_json_object(self):
        # Any JSON lets a random model write strings for ever: closing quotes and braces get a
        # bias (applied before the mask, which alone decides what is valid).
        bias = {self.tokenizer.token_to_id('"'): 6.0, self.tokenizer.token_to_id("}"): 8.0}
        c = common_pb2.Constraint(json_object=True)
        self.assert_all_valid(c, lambda text: self.assertIsInstance(json.loads(text), dict), bias=bias)

    def test_regex_choice_and_grammar(self):
        pattern = "[a-z]{2,4}-[0-9]{2}"
        self.assert_all_valid(common_pb2.Constraint(regex=pattern),
                              lambda t: self.assertIsNotNone(re.fullmatch(pattern, t), t))
        choices = ["yes", "no", "maybe not"]
        self.assert_all_valid(common_pb2.Constraint(choice=common_pb2.ChoiceList(choices=choices)),
                              lambda t: self.assertIn(t, choices))
        grammar = 'root ::= "(" num ("+" num)* ")"\nnum ::= [1-9] [0-9]?'
        self.assert_all_valid(common_pb2.Constraint(grammar=grammar),
                              lambda t: self.assertIsNotNone(re.fullmatch(r"\([1-9][0-9]?(\+[1-9][0-9]?)*\)", t), t))

    def test_bad_grammars_are_invalid_argument_naming_the_field(self):
        cases = [(common_pb2.Constraint(json_schema='{"type": "object", "properties": '), "json_schema"),
                 (common_pb2.Constraint(regex="[a-z"), "regex"),
                 (common_pb2.Constraint(grammar='root ::= "a" undefined_rule'), "grammar"),
                 (common_pb2.Constraint(choice=common_pb2.ChoiceList()), "choice")]
        for constraint, field in cases:
            with self.assertRaises(grpc.RpcError) as e:
                self.generate(request(self.prompt, 10, 1, constraint))
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, e.exception.details())
            self.assertIn(f"sampling.constraint.{field}", e.exception.details())

    def test_logit_bias_forces_and_forbids(self):
        forced = request(self.prompt, 8, 3, ignore_eos=True)
        forced.sampling.logit_bias[500] = 100.0
        tokens, _ = self.generate(forced)
        self.assertEqual(tokens, [500] * 8)
        free, _ = self.generate(request(self.prompt, 8, 3, ignore_eos=True))
        forbidden = request(self.prompt, 8, 3, ignore_eos=True)
        forbidden.sampling.logit_bias[free[0]] = -100.0
        tokens, _ = self.generate(forbidden)
        self.assertNotIn(free[0], tokens)
        bad = request(self.prompt, 8, 3)
        bad.sampling.logit_bias[10 ** 6] = 1.0
        with self.assertRaises(grpc.RpcError) as e:
            self.generate(bad)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sampling.logit_bias[1000000]", e.exception.details())

    def test_min_new_tokens(self):
        eos = [2087, 2047]  # the tiny model's generation_config.json
        req = request(self.prompt, 20, 5, min_new_tokens=10)
        for t in eos:
            req.sampling.logit_bias[t] = 100.0  # eos wins whenever it is allowed
        _, last = self.generate(req)
        self.assertEqual(last.usage.completion_tokens, 11)  # 10 tokens, then eos
        self.assertEqual(last.finish_reason, common_pb2.FINISH_REASON_STOP)
        with self.assertRaises(grpc.RpcError) as e:
            self.generate(request(self.prompt, 20, 5, min_new_tokens=21))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("stopping.min_new_tokens", e.exception.details())

    def test_n_identical_prompts_prefill_once(self):
        prompt = [(7 * i) % 2000 + 1 for i in range(3 * BLOCK + 5)]
        # A long request keeps the engine stepping, so that the four arrive together.
        busy = threading.Thread(target=self.generate, args=(request([1, 2, 3], 300, 1, ignore_eos=True),))
        busy.start()
        while self.stub.GetStatus(worker_pb2.GetStatusRequest()).running == 0:
            time.sleep(0.001)
        before = self.metric("phi_worker_prefill_tokens_total")
        results = [None] * 4

        def one(i):
            results[i] = self.generate(request(prompt, 8, 100 + i, ignore_eos=True))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        prefill = self.metric("phi_worker_prefill_tokens_total") - before
        busy.join()
        print(f"n=4 identical prompts of {len(prompt)} tokens: {prefill:.0f} prefill tokens computed", flush=True)
        self.assertGreaterEqual(prefill, len(prompt))
        self.assertLessEqual(prefill, len(prompt) + 4 * (BLOCK - 1))
        self.assertEqual(sum(r[1].usage.cached_prompt_tokens for r in results), 3 * 3 * BLOCK)
        self.assertGreater(len({tuple(r[0]) for r in results}), 1, "seeds 100..103 gave one sample")

    def test_zz_grammar_metrics(self):
        text = self.svc.scrape()
        for name in ("phi_worker_grammar_cache_lookups_total", "phi_worker_grammar_mask_wait_seconds_count",
                     "phi_worker_prefill_tokens_total"):
            self.assertIn(name, text)


def big_schema(fields, tag):
    props = {f"{tag}{i}": {"type": "string", "pattern": "[a-z]{3,40}"} for i in range(fields)}
    return json.dumps({"type": "object", "properties": props, "required": list(props)})


class CompileLimitTest(phi_testlib.ServiceTestCase):
    """A worker with a tiny compile limit: slow grammars are refused by name, and a client that
    gives up while its grammar compiles leaves nothing behind."""

    @classmethod
    def setUpClass(cls):
        cls.start_service(BINARY, [f"--model={MODEL}", "--kv-cache-blocks=64", "--threads=1",
                                   "--grammar-compile-timeout-seconds=0.02"], "worker-compile",
                          worker_pb2_grpc.WorkerServiceStub)

    def wait_compile_thread_free(self):
        """A compile past its limit keeps its thread until it ends (new grammars meanwhile get
        RESOURCE_EXHAUSTED): wait for it with a grammar that compiles at once."""
        deadline = time.time() + 60
        while time.time() < deadline:
            c = common_pb2.Constraint(choice=common_pb2.ChoiceList(choices=[f"x{time.time()}"]))
            try:
                list(self.stub.Generate(request([1, 2], 1, 1, c), timeout=60))
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return
            time.sleep(0.05)

    def test_1_slow_compile_is_invalid_argument(self):
        req = request([1, 2, 3], 5, 1, common_pb2.Constraint(json_schema=big_schema(150, "a")))
        with self.assertRaises(grpc.RpcError) as e:
            list(self.stub.Generate(req, timeout=60))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, e.exception.details())
        self.assertIn("sampling.constraint.json_schema", e.exception.details())
        self.assertIn("to compile", e.exception.details())

    def test_2_client_gone_while_compiling(self):
        self.wait_compile_thread_free()
        for i in range(4):
            req = request([1, 2, 3], 5, 1, common_pb2.Constraint(json_schema=big_schema(150, f"b{i}_")))
            with self.assertRaises(grpc.RpcError) as e:
                list(self.stub.Generate(req, timeout=0.005))
            # The later ones may find the compile thread stuck past its limit already.
            allowed = [grpc.StatusCode.DEADLINE_EXCEEDED] + ([grpc.StatusCode.RESOURCE_EXHAUSTED] if i else [])
            self.assertIn(e.exception.code(), allowed, e.exception.details())
        # Still serving, and nothing left in the engine.
        tokens = []
        for m in self.stub.Generate(request([1, 2, 3], 5, 1, ignore_eos=True), timeout=60):
            tokens.extend(m.token_ids)
        self.assertEqual(len(tokens), 5)
        s = self.stub.GetStatus(worker_pb2.GetStatusRequest())
        self.assertEqual((s.waiting, s.running), (0, 0))


if __name__ == "__main__":
    BINARY, MODEL = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)
