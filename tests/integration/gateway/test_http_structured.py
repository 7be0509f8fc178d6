#!/usr/bin/env python3
"""Structured output and the sampling surface through the OpenAI-compatible HTTP API,
with the `openai` Python client against the real phi-tokenizer, phi-worker and phi-gateway on
loopback (stack.py) and the random-weight tiny model:
  - response_format json_schema / json_object on chat, guided_json / guided_regex /
    guided_grammar / guided_choice on both endpoints (extra_body): outputs parse / match, and
    end with finish_reason "stop" when the grammar completes;
  - n = 3 on chat (each choice its own index, finish_reason and logprobs; streamed chunks carry
    the index and give the same texts; usage counts the prompt once), n = 2 over two prompts on
    completions (index = prompt * n + choice, choice i sampled with seed + i), best_of;
  - logit_bias +100 forces a token, -100 forbids the greedy one;
  - include_stop_str_in_output and min_tokens against a greedy reference;
  - bad inputs are 400s whose `param` is the parameter as sent: a schema, regex or grammar the
    worker refuses names response_format / guided_regex / guided_grammar, a token id past the
    vocabulary logit_bias.
"""
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from http_client import call_json  # noqa: E402
import jsonschema  # noqa: E402
import openai  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "ok": {"type": "boolean"},
        # A pattern, not minLength/maxLength: xgrammar 0.2.9 lets raw control characters into
        # length-bounded strings (tests/integration/structured covers that); this test is about
        # the HTTP surface.
        "name": {"type": "string", "pattern": "^[a-z]{1,6}$"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 3},
    },
    "required": ["color", "ok", "name", "tags"],
    "additionalProperties": False,
}
SEEDS = (1, 2, 3, 4)
MAX_TOKENS = 256


class HttpStructuredTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack(workers=1)
        cls.port = cls.s.http_port
        cls.client = openai.OpenAI(base_url=f"http://127.0.0.1:{cls.port}/v1", api_key="unused", max_retries=0,
                                   timeout=120)
        cls.model = cls.client.models.list().data[0].id

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def chat(self, content="Reply in the requested format.", **kw):
        kw.setdefault("max_tokens", MAX_TOKENS)
        kw.setdefault("temperature", 1.0)
        return self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": content}],
                                                   **kw)

    def complete(self, prompt="Answer:", **kw):
        kw.setdefault("max_tokens", MAX_TOKENS)
        kw.setdefault("temperature", 1.0)
        return self.client.completions.create(model=self.model, prompt=prompt, **kw)

    def token_ids(self, text):
        status, _, body = call_json(self.port, "POST", "/tokenize", {"model": self.model, "prompt": text})
        self.assertEqual(status, 200, body)
        return body["tokens"]

    def token_id(self, text):
        ids = self.token_ids(text)
        self.assertEqual(len(ids), 1, f"{text!r} is not one token: {ids}")
        return ids[0]

    def assert_400(self, param, create, param_prefix=False, **kw):
        with self.assertRaises(openai.BadRequestError) as cm:
            create(**kw)
        self.assertEqual(cm.exception.status_code, 400)
        err = cm.exception.body
        self.assertEqual(err["type"], "invalid_request_error", err)
        if param_prefix:
            self.assertTrue((err["param"] or "").startswith(param), err)
        else:
            self.assertEqual(err["param"], param, err)
        return err["message"]

    # --- constrained output ---

    def test_response_format_json_schema(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
        for seed in SEEDS:
            r = self.chat(response_format=fmt, seed=seed)
            c = r.choices[0]
            self.assertEqual(c.finish_reason, "stop", c.message.content)
            jsonschema.validate(json.loads(c.message.content), SCHEMA)

    def test_response_format_json_object(self):
        stopped = 0
        for seed in SEEDS:
            c = self.chat(response_format={"type": "json_object"}, seed=seed, max_tokens=512).choices[0]
            if c.finish_reason == "stop":
                stopped += 1
                self.assertIsInstance(json.loads(c.message.content), dict, c.message.content)
        self.assertGreater(stopped, 0)

    def test_guided_json_on_completions(self):
        for seed in SEEDS:
            # As an object, and as a string holding one (vLLM's clients send either).
            guided = SCHEMA if seed % 2 else json.dumps(SCHEMA)
            c = self.complete(seed=seed, extra_body={"guided_json": guided}).choices[0]
            self.assertEqual(c.finish_reason, "stop", c.text)
            jsonschema.validate(json.loads(c.text), SCHEMA)

    def test_guided_choice_regex_grammar(self):
        choices = ["alpha", "beta", "gamma delta"]
        for seed in SEEDS:
            c = self.chat(seed=seed, extra_body={"guided_choice": choices}).choices[0]
            self.assertIn(c.message.content, choices)
            self.assertEqual(c.finish_reason, "stop")
            c = self.complete(seed=seed, extra_body={"guided_choice": choices}).choices[0]
            self.assertIn(c.text, choices)
            regex = r"[0-9]{3}-[a-z]{2}"
            c = self.complete(seed=seed, extra_body={"guided_regex": regex}).choices[0]
            self.assertRegex(c.text, "^" + regex + "$")
            self.assertEqual(c.finish_reason, "stop")
            grammar = 'root ::= "yes" | "no" | "n" [0-9]'
            c = self.chat(seed=seed, extra_body={"guided_grammar": grammar}).choices[0]
            self.assertTrue(re.fullmatch(r"yes|no|n[0-9]", c.message.content), c.message.content)
            self.assertEqual(c.finish_reason, "stop")

    # --- n, best_of ---

    def test_chat_n3(self):
        kw = dict(n=3, seed=11, max_tokens=12, logprobs=True, extra_body={"ignore_eos": True})
        r = self.chat(**kw)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        texts = [c.message.content for c in r.choices]
        self.assertEqual(len(set(texts)), 3, texts)
        for c in r.choices:
            self.assertEqual(c.finish_reason, "length")
            self.assertEqual(len(c.logprobs.content), 12)
        self.assertEqual(r.usage.completion_tokens, 3 * 12)
        single = self.chat(max_tokens=12, seed=11, extra_body={"ignore_eos": True})
        self.assertEqual(r.usage.prompt_tokens, single.usage.prompt_tokens)
        self.assertEqual(texts[0], single.choices[0].message.content)
        # Streamed: the chunks carry their choice's index; the same texts; usage once, last.
        chunks = list(self.chat(stream=True, stream_options={"include_usage": True}, **kw))
        streamed, finish, usage = ["", "", ""], [None, None, None], []
        for i, ch in enumerate(chunks):
            if ch.usage:
                usage.append(i)
            for c in ch.choices:
                streamed[c.index] += c.delta.content or ""
                if c.finish_reason:
                    self.assertIsNone(finish[c.index])
                    finish[c.index] = c.finish_reason
        self.assertEqual(streamed, texts)
        self.assertEqual(finish, ["length"] * 3)
        self.assertEqual(usage, [len(chunks) - 1])
        self.assertEqual(chunks[-1].usage.completion_tokens, 3 * 12)
        self.assertEqual(chunks[-1].usage.prompt_tokens, r.usage.prompt_tokens)

    def test_completions_n2_over_two_prompts(self):
        prompts = ["one two", "three four five"]
        kw = dict(max_tokens=8, extra_body={"ignore_eos": True})
        r = self.complete(prompt=prompts, n=2, seed=40, **kw)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2, 3])
        prompt_tokens = 0
        for p, prompt in enumerate(prompts):
            for i in range(2):
                single = self.complete(prompt=prompt, seed=40 + i, **kw)
                self.assertEqual(r.choices[p * 2 + i].text, single.choices[0].text, f"prompt {p} choice {i}")
            prompt_tokens += single.usage.prompt_tokens
        self.assertEqual(r.usage.prompt_tokens, prompt_tokens)
        self.assertEqual(r.usage.completion_tokens, 4 * 8)

    def test_best_of(self):
        kw = dict(max_tokens=8, logprobs=0, extra_body={"ignore_eos": True})
        r = self.complete(best_of=3, seed=70, **kw)
        self.assertEqual(len(r.choices), 1)
        candidates = {}
        for seed in (70, 71, 72):
            c = self.complete(seed=seed, **kw).choices[0]
            candidates[c.text] = sum(c.logprobs.token_logprobs)
        self.assertIn(r.choices[0].text, candidates)
        self.assertAlmostEqual(candidates[r.choices[0].text], max(candidates.values()), places=3)
        self.assertEqual(r.usage.completion_tokens, 3 * 8)  # all three were generated

    # --- logit_bias ---

    def test_logit_bias(self):
        forced = self.token_id(" the")
        for seed in SEEDS[:2]:
            r = self.complete(seed=seed, max_tokens=6, logit_bias={str(forced): 100}, extra_body={"ignore_eos": True})
            self.assertEqual(r.choices[0].text, " the" * 6)
            r = self.chat(seed=seed, max_tokens=6, logit_bias={str(forced): 100}, extra_body={"ignore_eos": True})
            self.assertEqual(r.choices[0].message.content, " the" * 6)
        greedy = self.complete(temperature=0, max_tokens=4, logprobs=0, extra_body={"ignore_eos": True})
        first = greedy.choices[0].logprobs.tokens[0]
        ids = self.token_ids(first)
        if len(ids) == 1:  # a token's text may encode otherwise (a partial UTF-8 character)
            r = self.complete(temperature=0, max_tokens=4, logprobs=0, logit_bias={str(ids[0]): -100},
                              extra_body={"ignore_eos": True})
            self.assertNotEqual(r.choices[0].logprobs.tokens[0], first)

    # --- stop strings ---

    def test_include_stop_str_and_min_tokens(self):
        kw = dict(prompt="The", temperature=0, max_tokens=24, extra_body={"ignore_eos": True})
        reference = self.complete(**kw).choices[0].text
        # A stop string whose first occurrence is past the start.
        at = next((i for i in range(4, len(reference) - 3) if reference.find(reference[i:i + 3]) == i), None)
        self.assertIsNotNone(at, reference)
        stop = reference[at:at + 3]
        r = self.complete(stop=[stop], **kw).choices[0]
        self.assertEqual((r.text, r.finish_reason), (reference[:at], "stop"))
        with_stop = dict(kw, extra_body={"ignore_eos": True, "include_stop_str_in_output": True})
        r = self.complete(stop=[stop], **with_stop).choices[0]
        self.assertEqual((r.text, r.finish_reason), (reference[:at + 3], "stop"))
        # min_tokens = max_tokens: the stop string cannot end it.
        held = dict(kw, extra_body={"ignore_eos": True, "min_tokens": 24})
        r = self.complete(stop=[stop], **held)
        self.assertEqual((r.choices[0].text, r.choices[0].finish_reason), (reference, "length"))
        self.assertEqual(r.usage.completion_tokens, 24)

    # --- bad inputs ---

    def test_bad_inputs_name_the_parameter(self):
        # Refused by the worker's grammar compiler, before any token.
        for schema in ({"type": "no-such-type"}, {"type": "integer", "minimum": 5, "maximum": 1}):
            fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
            self.assert_400("response_format", self.chat, response_format=fmt)
            self.assert_400("guided_json", self.complete, extra_body={"guided_json": schema})
        self.assert_400("guided_regex", self.complete, extra_body={"guided_regex": "([a-z]+"})
        self.assert_400("guided_grammar", self.chat, extra_body={"guided_grammar": "root ::= undefined_rule"})
        # A token id past the model's vocabulary (known to the worker).
        vocab = self.s.worker_stub().GetStatus(stack.worker_pb2.GetStatusRequest(), timeout=10).vocab_size
        msg = self.assert_400("logit_bias", self.complete, param_prefix=True, logit_bias={str(vocab): 1}, max_tokens=2)
        self.assertIn(str(vocab), msg)
        # Refused by the gateway's parser.
        self.assert_400("response_format.json_schema.name", self.chat,
                        response_format={"type": "json_schema", "json_schema": {"name": "a b", "schema": SCHEMA}})
        self.assert_400("response_format.json_schema.schema", self.chat,
                        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}})
        self.assert_400("guided_regex", self.chat, response_format={"type": "json_object"},
                        extra_body={"guided_regex": "a"})
        self.assert_400("logit_bias.x", self.chat, logit_bias={"x": 1})
        self.assert_400("logit_bias.5", self.chat, logit_bias={"5": 101})
        self.assert_400("n", self.chat, n=17)
        self.assert_400("best_of", self.complete, n=2, best_of=3, stream=True)
        self.assert_400("min_tokens", self.complete, max_tokens=4, extra_body={"min_tokens": 5})
        # The stack still serves afterwards.
        self.assertEqual(self.chat(extra_body={"guided_choice": ["ok"]}).choices[0].message.content, "ok")


if __name__ == "__main__":
    unittest.main(verbosity=2)
