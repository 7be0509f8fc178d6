#!/usr/bin/env python3
"""Prompt logprobs and echo at 2,000 tokens through the real tokenizer SERVICE: gRPC
Complete and HTTP /v1/completions (lm-evaluation-harness's loglikelihood request: echo, logprobs,
max_tokens 0), top logprobs 5, the same answers as --local-tokenizer, and a gateway whose memory
stays flat over many such requests. The tiny test model has a 2,048-token context."""
import concurrent.futures
import json
import os
import random
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import gateway_pb2, tokenizer_pb2, tokenizer_pb2_grpc  # noqa: E402
from phi.v1 import common_pb2  # noqa: E402

N_TOKENS = 2000
WORDS = ("the of and to in is was for on that with as by at from his her an were are which this be or has "
         "had not but one all their they it he she we you new first two time year people state world city "
         "school system house water music river light night story number point house game power").split()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class PromptLogprobsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack(workers=1)
        cls.stub = cls.s.chat_stub()
        cls.gateway_pid = cls.s.procs[-1].proc.pid
        _, cls.local_http_port, _ = cls.s.add_gateway(args=["--local-tokenizer", cls.s.model])
        cls.tok = tokenizer_pb2_grpc.TokenizerServiceStub(stack.channel(f"127.0.0.1:{cls.s.tok_port}"))
        cls.prompt = cls.make_prompt(random.Random(20), N_TOKENS)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    @classmethod
    def encode(cls, text):
        r = cls.tok.Encode(tokenizer_pb2.EncodeRequest(prompts=[tokenizer_pb2.Prompt(text=text.encode())]), timeout=10)
        return list(r.encodings[0].ids)

    @classmethod
    def make_prompt(cls, rng, n):
        """ASCII words encoding to exactly n tokens (each token's text alone is then valid UTF-8)."""
        words = [rng.choice(WORDS) for _ in range(n)]
        lo, hi = 1, n  # the most words whose text is at most n tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(cls.encode(" ".join(words[:mid]))) <= n:
                lo = mid
            else:
                hi = mid - 1
        text = " ".join(words[:lo])
        while len(cls.encode(text)) < n:
            text += "."  # "." after a word or another "." is one more token in the tiny tokenizer
        assert len(cls.encode(text)) == n, len(cls.encode(text))
        return text

    def http_score(self, prompt, top=1, port=None):
        body = {"prompt": prompt, "echo": True, "logprobs": top, "max_tokens": 0, "temperature": 0}
        req = urllib.request.Request(f"http://127.0.0.1:{port or self.s.http_port}/v1/completions",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            self.assertEqual(r.status, 200)
            return json.loads(r.read())

    def check_http(self, resp, prompt, top):
        choice = resp["choices"][0]
        lp = choice["logprobs"]
        self.assertEqual(choice["text"], prompt)
        self.assertEqual(resp["usage"]["prompt_tokens"], N_TOKENS)
        self.assertEqual(len(lp["tokens"]), N_TOKENS)
        self.assertEqual("".join(lp["tokens"]), prompt)
        self.assertIsNone(lp["token_logprobs"][0])
        self.assertIsNone(lp["top_logprobs"][0])
        self.assertTrue(all(x is not None and x <= 0 for x in lp["token_logprobs"][1:]))
        offsets = [0]
        for t in lp["tokens"][:-1]:
            offsets.append(offsets[-1] + len(t.encode()))
        self.assertEqual(lp["text_offset"], offsets)
        for tops in lp["top_logprobs"][1:]:
            # Alternatives whose texts coincide (padded rows are all "") share one key.
            self.assertTrue(1 <= len(tops) <= top, tops)
            self.assertTrue(all(v <= 0 for v in tops.values()))

    def test_http_echo_logprobs_2000_tokens(self):
        self.check_http(self.http_score(self.prompt, top=1), self.prompt, 1)

    def test_http_top_logprobs_5_and_local_tokenizer_agree(self):
        remote = self.http_score(self.prompt, top=5)
        self.check_http(remote, self.prompt, 5)
        local = self.http_score(self.prompt, top=5, port=self.local_http_port)
        self.assertEqual(local["choices"][0]["logprobs"], remote["choices"][0]["logprobs"])

    def test_grpc_complete_prompt_logprobs_2000_tokens(self):
        ids = self.encode(self.prompt)
        first = self.tok.Decode(tokenizer_pb2.DecodeRequest(sequences=[tokenizer_pb2.TokenIds(ids=ids[:1])]),
                                timeout=10).texts[0]
        for top in (0, 5):
            r = self.stub.Complete(gateway_pb2.CompleteRequest(
                prompt=self.prompt, echo=True, prompt_logprobs=True, top_logprobs=top,
                stopping=common_pb2.StoppingCriteria(max_new_tokens=1)), timeout=120)
            self.assertTrue(r.text.startswith(self.prompt))
            self.assertEqual(r.usage.prompt_tokens, N_TOKENS)
            self.assertEqual(len(r.prompt_logprobs), N_TOKENS - 1)
            self.assertEqual([p.token.token_id for p in r.prompt_logprobs], ids[1:])
            self.assertEqual(first + "".join(p.token.text for p in r.prompt_logprobs), self.prompt)
            self.assertTrue(all(p.token.logprob <= 0 for p in r.prompt_logprobs))
            self.assertTrue(all(len(p.top) == top for p in r.prompt_logprobs))
            self.assertTrue(all(t.text or t.token_id >= 2048 for p in r.prompt_logprobs for t in p.top))

    def test_gateway_memory_stays_bounded(self):
        rng = random.Random(7)
        prompts = [self.make_prompt(rng, N_TOKENS) for _ in range(4)]

        def round_of(n):
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for resp in pool.map(lambda i: self.http_score(prompts[i % 4], top=5), range(n)):
                    self.assertEqual(len(resp["choices"][0]["logprobs"]["tokens"]), N_TOKENS)
            return rss_kib(self.gateway_pid)

        before = rss_kib(self.gateway_pid)
        warm = round_of(8)
        after = round_of(24)
        print(f"gateway RSS: {before} KiB at start, {warm} KiB after 8 requests, {after} KiB after 32",
              file=sys.stderr)
        # Each request holds ~2,000 x 6 texts while it runs: a few MiB; nothing is kept after it.
        self.assertLess(warm - before, 96 * 1024)
        self.assertLess(after - warm, 24 * 1024)


if __name__ == "__main__":
    unittest.main(verbosity=2)
