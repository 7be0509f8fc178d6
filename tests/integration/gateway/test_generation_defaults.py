"""Requests that state no temperature or max_tokens get the served model's
generation_config.json defaults, through the real tokenizer, worker and gateway.

- A model whose file says do_sample true, temperature 0.7, max_new_tokens 7: an HTTP chat
  request without temperature or max_tokens samples (with a seed it equals the same request
  with an explicit temperature 0.7) and stops at 7 tokens; so does a gRPC Chat without
  sampling.temperature; an explicit temperature 0 stays greedy on both; completions keep
  OpenAI's max_tokens 16.
- A model whose file states no sampling (what tools/make_model.py writes, as Phi-1.5's): a
  request without temperature is greedy, on HTTP and gRPC.
"""
import json
import os
import shutil
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from stack import Stack  # noqa: E402
from phi.v1 import common_pb2, gateway_pb2, worker_pb2  # noqa: E402

SEEDS = range(6)
PROMPT = [{"role": "user", "content": "Tell me a story."}]


def model_with_sampling(base, out):
    """A copy of the test model whose generation_config.json samples (its ids kept)."""
    os.makedirs(out)
    for name in os.listdir(base):
        if name != "generation_config.json":
            os.symlink(os.path.join(base, name), os.path.join(out, name))
    with open(os.path.join(base, "generation_config.json")) as f:
        config = json.load(f)
    config.update({"do_sample": True, "temperature": 0.7, "max_new_tokens": 7})
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(config, f)


class DefaultsCase(unittest.TestCase):
    """A stack serving the model at `model_dir` (None: the test model as it is)."""
    model_dir = None

    @classmethod
    def setUpClass(cls):
        base = os.environ["PHI_TEST_MODEL"]
        cls.tmp = tempfile.mkdtemp(prefix="phi-gen-defaults-")
        if cls.model_dir:
            path = os.path.join(cls.tmp, cls.model_dir)
            model_with_sampling(base, path)
            os.environ["PHI_TEST_MODEL"] = path
        try:
            cls.s = Stack()
        finally:
            os.environ["PHI_TEST_MODEL"] = base
        cls.stub = cls.s.chat_stub()

    @classmethod
    def tearDownClass(cls):
        cls.s.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def post(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.s.http_port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    def chat(self, **kw):
        """(text, completion tokens, finish_reason) of an HTTP chat request."""
        r = self.post("/v1/chat/completions", {"messages": PROMPT, "ignore_eos": True, **kw})
        c = r["choices"][0]
        tokens = tuple(t["token"] for t in c["logprobs"]["content"]) if kw.get("logprobs") else None
        return (c["message"]["content"], tokens), r["usage"]["completion_tokens"], c["finish_reason"]

    def grpc_chat(self, max_new_tokens=0, **sampling):
        """(token ids, completion tokens) of a gRPC Chat; max_new_tokens 0: the default."""
        stopping = common_pb2.StoppingCriteria(ignore_eos=True, max_new_tokens=max_new_tokens)
        req = gateway_pb2.ChatRequest(sampling=common_pb2.SamplingParams(**sampling), stopping=stopping,
                                      logprobs=True)
        req.messages.add(role=gateway_pb2.ROLE_USER, content=PROMPT[0]["content"])
        r = self.stub.Chat(req, timeout=60)
        return tuple(p.token.token_id for p in r.logprobs), r.usage.completion_tokens


class SamplingModelTest(DefaultsCase):
    model_dir = "sampling-model"

    def test_worker_reports_the_defaults(self):
        d = self.s.worker_stub().GetStatus(worker_pb2.GetStatusRequest(), timeout=10).generation_defaults
        self.assertAlmostEqual(d.sampling.temperature, 0.7, places=6)
        self.assertEqual(d.max_new_tokens, 7)

    def test_http_request_without_temperature_samples_at_the_models(self):
        differs_from_greedy = 0
        for seed in SEEDS:
            default, n, finish = self.chat(seed=seed, logprobs=True)
            self.assertEqual((n, finish), (7, "length"), f"seed {seed}: the model's max_new_tokens")
            explicit, n, _ = self.chat(seed=seed, logprobs=True, temperature=0.7, max_tokens=7)
            self.assertEqual(default, explicit, f"seed {seed}")
            greedy, _, _ = self.chat(seed=seed, logprobs=True, temperature=0, max_tokens=7)
            differs_from_greedy += default != greedy
        # Random weights: 7 tokens sampled at 0.7 are all but never the greedy ones.
        self.assertGreater(differs_from_greedy, 0, "no seed sampled: the defaults were not applied")

    def test_explicit_zero_stays_greedy(self):
        greedy = {self.chat(seed=seed, logprobs=True, temperature=0)[0] for seed in SEEDS}
        self.assertEqual(len(greedy), 1)

    def test_grpc_without_temperature_samples_and_explicit_zero_is_greedy(self):
        greedy = self.grpc_chat(temperature=0.0, seed=1)
        self.assertEqual(greedy[1], 7)
        differs = 0
        for seed in SEEDS:
            default = self.grpc_chat(seed=seed)
            self.assertEqual(default, self.grpc_chat(seed=seed, temperature=0.7), f"seed {seed}")
            self.assertEqual(self.grpc_chat(seed=seed, temperature=0.0), greedy, f"seed {seed}")
            differs += default != greedy
        self.assertGreater(differs, 0)

    def test_completions_keep_openai_max_tokens(self):
        r = self.post("/v1/completions", {"prompt": "Once", "ignore_eos": True, "seed": 3})
        self.assertEqual(r["usage"]["completion_tokens"], 16)


class GreedyModelTest(DefaultsCase):
    def test_worker_reports_greedy(self):
        d = self.s.worker_stub().GetStatus(worker_pb2.GetStatusRequest(), timeout=10).generation_defaults
        self.assertEqual(d.sampling.temperature, 0.0)
        self.assertEqual(d.max_new_tokens, 256)

    def test_request_without_temperature_is_greedy(self):
        greedy, _, _ = self.chat(seed=0, logprobs=True, temperature=0, max_tokens=8)
        sampled = 0
        for seed in SEEDS:
            self.assertEqual(self.chat(seed=seed, logprobs=True, max_tokens=8)[0], greedy, f"seed {seed}")
            sampled += self.chat(seed=seed, logprobs=True, max_tokens=8, temperature=1.0)[0] != greedy
            self.assertEqual(self.grpc_chat(8, seed=seed), self.grpc_chat(8, seed=seed, temperature=0.0))
        self.assertGreater(sampled, 0, "temperature 1 never differed from greedy: the test cannot tell")


if __name__ == "__main__":
    unittest.main()
