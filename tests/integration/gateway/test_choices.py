#!/usr/bin/env python3
"""n > 1, best_of, logit_bias and stop-string accounting over real gRPC: the real
phi-tokenizer, phi-worker and phi-gateway on loopback, the tiny random-weight model.

- n = 4 sampled at temperature 1 gives 4 distinct choices, indexes 0..3, seeds seed + i, and
  choice i is exactly what a single request with seed + i gives; the worker prefilled the
  prompt's full blocks once for the four; the stream carries the same choices by index.
- best_of = 3 returns the choice of highest cumulative logprob among seeds seed..seed + 2.
- logit_bias +100 on a token forces it at every step; -100 on the greedy token forbids it.
- With a stop string, usage.completion_tokens and the logprobs end at the token that
  completed it (the worker generated more); min_new_tokens and include_stop_str_in_output.
"""
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import grpc, gateway_pb2, worker_pb2  # noqa: E402
from phi.v1 import common_pb2  # noqa: E402

WORDS = "the of and to in is was for on that with as by at from his her an were are which this be or".split()


def counter(metrics_text, name):
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


class ChoicesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack(workers=1)
        cls.stub = cls.s.chat_stub()
        # Stop strings are matched on decoded text: through the tokenizer service (above) and
        # in-process.
        cls.local_port, _, _ = cls.s.add_gateway(args=["--local-decode", cls.s.model])
        cls.local_stub = cls.s.chat_stub(cls.local_port)
        cls.rng = random.Random(21)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def fresh_prompt(self, words=40):
        """A prompt no earlier request shares a prefix with (the prefix cache would skip prefill)."""
        return f"{self.rng.randrange(10**9)} " + " ".join(self.rng.choice(WORDS) for _ in range(words))

    def complete(self, prompt, seed=None, n=0, best_of=0, temperature=1.0, max_new=12, logprobs=True, **kw):
        sampling = common_pb2.SamplingParams(temperature=temperature, logit_bias=kw.pop("logit_bias", {}))
        if seed is not None:
            sampling.seed = seed
        req = gateway_pb2.CompleteRequest(prompt=prompt, sampling=sampling, n=n, best_of=best_of, logprobs=logprobs,
                                          stopping=common_pb2.StoppingCriteria(max_new_tokens=max_new, **kw))
        return self.stub.Complete(req, timeout=60)

    def test_n4_distinct_seeded_choices_one_prefill(self):
        prompt = self.fresh_prompt()
        before = counter(self.s.metrics(self.s.worker_metrics_ports[0]), "phi_worker_prefill_tokens_total")
        r = self.complete(prompt, seed=1000, n=4)
        prefilled = counter(self.s.metrics(self.s.worker_metrics_ports[0]), "phi_worker_prefill_tokens_total") - before
        self.assertEqual([c.index for c in r.choices], [0, 1, 2, 3])
        self.assertEqual([c.seed for c in r.choices], [1000, 1001, 1002, 1003])
        texts = [c.text for c in r.choices]
        self.assertEqual(len(set(texts)), 4, texts)
        self.assertEqual(r.text, texts[0])
        self.assertEqual(r.seed, 1000)
        # One prefill for the four choices: they share the prompt's full KV blocks, and each
        # computes at most its last, partial block on its own (not four times the prompt).
        block = self.s.worker_stub().GetStatus(worker_pb2.GetStatusRequest(), timeout=5).kv_block_size
        self.assertGreater(r.usage.prompt_tokens, 3 * block)  # so that four prefills would show
        self.assertGreaterEqual(prefilled, r.usage.prompt_tokens)
        self.assertLessEqual(prefilled, r.usage.prompt_tokens + 3 * (block - 1), (prefilled, r.usage.prompt_tokens))
        self.assertEqual(r.usage.completion_tokens, sum(len(c.logprobs) for c in r.choices))
        for c in r.choices:
            one = self.complete(prompt, seed=c.seed)
            self.assertEqual(one.text, c.text)
            self.assertEqual(one.finish_reason, c.finish_reason)
            self.assertEqual([p.token.token_id for p in one.logprobs], [p.token.token_id for p in c.logprobs])
            self.assertEqual(len(one.choices), 0)
        # The stream gives the same choices, each message tagged with its index.
        req = gateway_pb2.CompleteRequest(prompt=prompt, n=4, stopping=common_pb2.StoppingCriteria(max_new_tokens=12),
                                          sampling=common_pb2.SamplingParams(temperature=1.0, seed=1000))
        streamed, finish = {}, {}
        last = None
        for m in self.stub.CompleteStream(req, timeout=60):
            streamed[m.index] = streamed.get(m.index, "") + m.text_delta
            if m.finish_reason:
                finish[m.index] = (m.finish_reason, m.seed)
            last = m
        self.assertEqual([streamed.get(i, "") for i in range(4)], texts)
        self.assertEqual(finish, {i: (c.finish_reason, c.seed) for i, c in enumerate(r.choices)})
        self.assertEqual(last.usage.completion_tokens, r.usage.completion_tokens)

    def test_best_of_returns_the_highest_cumulative_logprob(self):
        prompt = self.fresh_prompt()
        singles = [self.complete(prompt, seed=2000 + i) for i in range(3)]
        scores = [sum(p.token.logprob for p in s.logprobs) for s in singles]
        best = max(range(3), key=lambda i: scores[i])
        r = self.complete(prompt, seed=2000, best_of=3, logprobs=False)
        self.assertEqual(r.text, singles[best].text, scores)
        self.assertEqual(r.seed, 2000 + best)
        self.assertEqual(len(r.logprobs), 0)  # asked for by the ranking only
        self.assertEqual(r.usage.completion_tokens, sum(len(s.logprobs) for s in singles))
        # Not on a streaming method.
        req = gateway_pb2.CompleteRequest(prompt=prompt, best_of=2)
        with self.assertRaises(grpc.RpcError) as e:
            list(self.stub.CompleteStream(req, timeout=30))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("best_of: 2 > n = 1", e.exception.details())

    def test_logit_bias_forces_and_forbids_a_token(self):
        prompt = self.fresh_prompt()
        forced = 1234
        r = self.complete(prompt, seed=5, logit_bias={forced: 100.0}, max_new=6)
        self.assertEqual([p.token.token_id for p in r.logprobs], [forced] * 6)
        greedy = self.complete(prompt, temperature=0, max_new=1)
        g = greedy.logprobs[0].token.token_id
        r = self.complete(prompt, temperature=0, max_new=1, logit_bias={g: -100.0})
        self.assertNotEqual(r.logprobs[0].token.token_id, g)
        with self.assertRaises(grpc.RpcError) as e:
            self.complete(prompt, logit_bias={5: 101.0})
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sampling.logit_bias[5]: 101 is outside [-100, 100]", e.exception.details())

    def stop_case(self, prompt):
        """Greedy pieces of `prompt`'s completion and a stop string whose first match in the text
        ends inside token k and is completed by it; None when the prompt gives none."""
        full = self.complete(prompt, temperature=0, max_new=24, ignore_eos=True)
        pieces = [p.token.text for p in full.logprobs]
        if "".join(pieces) != full.text:
            return None  # token texts that do not add up (a split character)
        for k in range(6, len(pieces) - 4):
            through = "".join(pieces[:k])
            for length in (2, 3, 4):
                stop = through[-length:]
                at = full.text.find(stop)
                # The first match ends with token k, and text before token k does not hold it all.
                if stop.strip() and at + len(stop) == len(through) and len(pieces[k - 1]) > 0:
                    return pieces, k, stop
        return None

    def test_stop_string_usage_and_logprobs_end_at_the_stop_token(self):
        case = None
        for _ in range(20):
            prompt = self.fresh_prompt(12)
            case = self.stop_case(prompt)
            if case:
                break
        self.assertIsNotNone(case, "no prompt gave a usable stop string")
        pieces, k, stop = case
        through = "".join(pieces[:k])
        for method, stub in (("unary", self.stub), ("stream", self.stub), ("unary local decode", self.local_stub),
                             ("stream local decode", self.local_stub)):
            req = gateway_pb2.CompleteRequest(prompt=prompt, logprobs=True,
                                              stopping=common_pb2.StoppingCriteria(max_new_tokens=24, ignore_eos=True,
                                                                                   stop=[stop]))
            if method.startswith("unary"):
                r = stub.Complete(req, timeout=60)
                text, lps, usage, finish = r.text, list(r.logprobs), r.usage, r.finish_reason
            else:
                text, lps = "", []
                for m in stub.CompleteStream(req, timeout=60):
                    text += m.text_delta
                    lps += list(m.logprobs)
                    usage, finish = m.usage, m.finish_reason
            self.assertEqual(text, through[:-len(stop)], method)
            self.assertEqual(finish, common_pb2.FINISH_REASON_STOP_STRING, method)
            self.assertEqual(usage.completion_tokens, k, (method, stop, pieces))
            self.assertEqual("".join(p.token.text for p in lps), through, method)
        # include_stop_str_in_output: the stop string ends the text.
        r = self.stub.Complete(gateway_pb2.CompleteRequest(prompt=prompt, stopping=common_pb2.StoppingCriteria(
            max_new_tokens=24, ignore_eos=True, stop=[stop], include_stop_str_in_output=True)), timeout=60)
        self.assertEqual(r.text, through)
        self.assertEqual(r.usage.completion_tokens, k)
        # min_new_tokens past k: that match cannot end it.
        r = self.stub.Complete(gateway_pb2.CompleteRequest(prompt=prompt, stopping=common_pb2.StoppingCriteria(
            max_new_tokens=24, ignore_eos=True, stop=[stop], min_new_tokens=k + 1)), timeout=60)
        self.assertGreater(r.usage.completion_tokens, k)
        self.assertTrue(r.text.startswith(through), (r.text, through))


if __name__ == "__main__":
    unittest.main(verbosity=2)
