#!/usr/bin/env python3
"""Structured output end to end: the real phi-tokenizer, phi-worker and phi-gateway on
loopback with a random-weight tiny model, driven over gRPC ChatService.Complete.

Sampling at temperature 1.0 with several seeds per case, every constrained output must be valid:
  - 58 JSON schemas (schemas.py; the docstring there lists the keywords covered): each output
    parses with json.loads and validates with the `jsonschema` package (Draft 2020-12, uuid format
    asserted); any_whitespace true on a few schemas too;
  - json_object: the output parses and is an object;
  - 7 regexes (grammars.py: dates, emails, decimals, alternations, ...) fully match with Python re;
  - 3 EBNF grammars (arithmetic, a small Lisp-like list language, key=value lines) accepted by
    checkers written independently of the grammar engine;
  - choice: the output is exactly one of the strings.
Every constrained output must end by the grammar (FINISH_REASON_STOP), never by max_new_tokens.
Also: the same seed gives the same output in a different batch; bad schemas, regexes, grammars and
choice lists are INVALID_ARGUMENT naming sampling.constraint.<kind>; n = 4 returns 4 distinct
samples, choice i equal to a single request with seed + i, with the prompt's prefill computed
once; logit_bias +100 forces a token and -100 forbids the greedy one (also under a grammar).

PHI_STRUCTURED_SEEDS (default 32) sets the seeds per schema, regex, grammar and choice list.
PHI_TEST_MODEL is the model folder: CTest runs this with the 2k trained test vocabulary and with
Phi-1.5's real one (GPT-2 BPE, 51,200 rows), whose multi-byte and U+FFFD tokens the UTF-8 check
reads from the model's tokenizer.json.
"""
import concurrent.futures
import json
import math
import os
import random
import re
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "gateway"))
import stack  # noqa: E402
from stack import grpc, gateway_pb2, worker_pb2, tokenizer_pb2, tokenizer_pb2_grpc  # noqa: E402
from phi.v1 import common_pb2  # noqa: E402
import jsonschema  # noqa: E402

import grammars  # noqa: E402
from schemas import SCHEMAS, UNBOUNDED_NUMBERS  # noqa: E402

SEEDS = int(os.environ.get("PHI_STRUCTURED_SEEDS", "32"))
MAX_NEW_TOKENS = 512
CONCURRENCY = 16
PROMPT = "Reply with the requested format.\n"
STOP, LENGTH = common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH
FORMATS = jsonschema.FormatChecker(formats=["uuid"])


def constraint(**kind):
    return common_pb2.Constraint(**kind)


def token_bytes(model_dir):
    """id -> the bytes the token stands for, from the model folder's byte-level BPE tokenizer.json
    (GPT-2's byte-to-unicode table); special tokens are left out (they are never output text)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    out = {i: bytes(chars[ch] for ch in text) for text, i in tok["model"]["vocab"].items()}
    for t in tok.get("added_tokens", []):
        if t["special"]:
            out.pop(t["id"], None)
        else:
            out[t["id"]] = t["content"].encode()
    return out


def counter(metrics_text, name):
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class StructuredOutputTest(unittest.TestCase):
    checked = {}  # kind -> [outputs checked, outputs valid, completion tokens], printed at the end

    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack(workers=1)
        cls.stub = cls.s.chat_stub()
        cls.tok = tokenizer_pb2_grpc.TokenizerServiceStub(stack.channel(f"127.0.0.1:{cls.s.tok_port}"))
        cls.status = cls.s.worker_stub().GetStatus(worker_pb2.GetStatusRequest(), timeout=10)
        cls.token_bytes = token_bytes(cls.s.model)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()
        for kind, (n, ok, tokens) in sorted(cls.checked.items()):
            print(f"validity {kind}: {n} outputs checked, {ok} valid ({tokens / max(n, 1):.1f} tokens each on average)",
                  file=sys.stderr)

    def complete(self, seed, c=None, max_new_tokens=MAX_NEW_TOKENS, prompt=PROMPT, temperature=1.0,
                 logit_bias=None, logprobs=False, n=0, ignore_eos=False, timeout=120):
        sampling = common_pb2.SamplingParams(temperature=temperature, seed=seed, logit_bias=logit_bias or {})
        if c is not None:
            sampling.constraint.CopyFrom(c)
        return self.stub.Complete(gateway_pb2.CompleteRequest(
            prompt=prompt, sampling=sampling, logprobs=logprobs, n=n,
            stopping=common_pb2.StoppingCriteria(max_new_tokens=max_new_tokens, ignore_eos=ignore_eos)),
            timeout=timeout)

    def run_cases(self, kind, cases, logit_bias=None):
        """cases: (label, seed, Constraint, check(text) raising on an invalid output). Runs them
        CONCURRENCY at a time (so the worker batches constrained rows together) and fails with
        every invalid output listed."""
        def one(case):
            label, seed, c, check = case
            try:
                r = self.complete(seed, c, logit_bias=logit_bias, logprobs=True)
            except grpc.RpcError as e:
                return f"{label} seed {seed}: {e.code().name} {e.details()}", 0
            if r.finish_reason != STOP:
                return (f"{label} seed {seed}: finish_reason {common_pb2.FinishReason.Name(r.finish_reason)} "
                        f"after {r.usage.completion_tokens} tokens: {r.text[:200]!r}"), r.usage.completion_tokens
            # The text is what the gateway decoded, bytes that are not UTF-8 spelled U+FFFD: the
            # generated tokens' own bytes must be UTF-8, and that text.
            raw = b"".join(self.token_bytes.get(p.token.token_id, b"") for p in r.logprobs)
            try:
                if raw.decode("utf-8") != r.text:
                    return f"{label} seed {seed}: the tokens spell {raw!r}, the text is {r.text!r}", len(r.logprobs)
            except UnicodeDecodeError as e:
                return f"{label} seed {seed}: generated bytes are not UTF-8 ({e}): {raw[:300]!r}", len(r.logprobs)
            try:
                check(r.text)
            except Exception as e:  # noqa: BLE001 (any checker error is an invalid output)
                return (f"{label} seed {seed}: {type(e).__name__}: {str(e)[:300]} in {r.text[:300]!r}",
                        r.usage.completion_tokens)
            return None, r.usage.completion_tokens

        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(one, cases))
        errors = [e for e, _ in results if e]
        total = self.checked.setdefault(kind, [0, 0, 0])
        total[0] += len(cases)
        total[1] += len(cases) - len(errors)
        total[2] += sum(n for _, n in results)
        for e in errors:
            print(f"invalid {kind}: {e}", file=sys.stderr)
        if errors:
            self.fail(f"{len(errors)} of {len(cases)} {kind} outputs invalid:\n" + "\n".join(errors[:60]))

    # --- validity under sampling ---

    def test_json_schemas(self):
        cases = []
        for i, (name, schema) in enumerate(SCHEMAS):
            if name in UNBOUNDED_NUMBERS and self.status.vocab_size > 8192:
                continue  # see UNBOUNDED_NUMBERS
            validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)

            def check(text, validator=validator):
                validator.validate(json.loads(text))
            c = constraint(json_schema=json.dumps(schema))
            cases += [(name, 1000 * i + k, c, check) for k in range(SEEDS)]
        self.run_cases("json_schema", cases)

    def test_json_schemas_any_whitespace(self):
        cases = []
        for name in ("object_nested_two", "array_of_objects", "tool_call", "anyof_objects"):
            schema = dict(SCHEMAS)[name]
            validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)

            def check(text, validator=validator):
                validator.validate(json.loads(text))
            c = constraint(json_schema=json.dumps(schema), any_whitespace=True)
            cases += [(name + "+ws", 77 + k, c, check) for k in range(SEEDS)]
        self.run_cases("json_schema_any_whitespace", cases)

    def test_json_object(self):
        def check(text):
            if not isinstance(json.loads(text), dict):
                raise ValueError("not an object")
        # Any JSON object: keys, strings, numbers and nesting are unbounded, and a near-uniform
        # random model closes a string with odds of about 1 in the vocabulary's size per token. A
        # bias of ln(vocab / 20) on the tokens that close strings, arrays and objects gives each
        # ~5% per token, so the texts end within max_new_tokens; the mask still decides validity.
        boost = math.log(self.status.vocab_size / 20)
        bias = {self.token_id(t): boost for t in ('"', "}", "]")}
        self.run_cases("json_object", [("json_object", 500 + k, constraint(json_object=True), check)
                                       for k in range(SEEDS)], logit_bias=bias)

    def test_regexes(self):
        cases = []
        for name, rx, py in grammars.REGEXES:
            def check(text, py=py):
                if not py.fullmatch(text):
                    raise ValueError(f"no full match of {py.pattern}")
            cases += [(name, 300 + k, constraint(regex=rx), check) for k in range(SEEDS)]
        self.run_cases("regex", cases)

    def test_grammars(self):
        cases = []
        for name, text, check in grammars.GRAMMARS:
            cases += [(name, 400 + k, constraint(grammar=text), check) for k in range(2 * SEEDS)]
        self.run_cases("grammar", cases)

    def test_choice(self):
        cases = []
        for i, choices in enumerate(grammars.CHOICES):
            def check(text, choices=choices):
                if text not in choices:
                    raise ValueError(f"not one of {choices}")
            c = constraint(choice=common_pb2.ChoiceList(choices=choices))
            cases += [(f"choice{i}", 600 + k, c, check) for k in range(2 * SEEDS)]
        self.run_cases("choice", cases)

    def test_seeded_output_does_not_depend_on_the_batch(self):
        c = constraint(json_schema=json.dumps(dict(SCHEMAS)["extraction"]))
        alone = self.complete(42, c)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            batch = list(pool.map(lambda s: self.complete(s, c), [42, 1, 2, 3, 4, 5, 6, 7]))
        self.assertEqual(batch[0].text, alone.text)
        self.assertEqual(batch[0].finish_reason, STOP)

    # --- bad inputs ---

    def assert_refused(self, c, field, where=None):
        """INVALID_ARGUMENT naming `field`, and the error's position when `where` (a regex) is given."""
        with self.assertRaises(grpc.RpcError) as cm:
            self.complete(1, c, timeout=60)
        details = cm.exception.details()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn(field, details)
        if where:
            self.assertRegex(details, where)

    def test_bad_constraints_are_refused_by_name(self):
        schemas = [('{"type": "object", "properties": ', r"offset \d+"),
                   ('{"type": "integer", "minimum": 5, "maximum": 1}', None),
                   ('{"type": "no-such-type"}', None), ("[1, 2]", None)]
        for schema, where in schemas:
            with self.subTest(schema=schema):
                self.assert_refused(constraint(json_schema=schema), "sampling.constraint.json_schema", where)
        # Only the syntax error's position is the client's: xgrammar parses a regex by converting it
        # to EBNF, and reports a bad range at a column of that conversion.
        for rx, where in (("([a-z]+", r"position \d+"), ("[z-a]", None), ("a{3,1}", None)):
            with self.subTest(regex=rx):
                self.assert_refused(constraint(regex=rx), "sampling.constraint.regex", where)
        for g in ("root ::= undefined_rule", 'root ::= "a" |', 'start ::= "a"', "root ::= [a-"):
            with self.subTest(grammar=g):
                self.assert_refused(constraint(grammar=g), "sampling.constraint.grammar", r"line \d+, column \d+")
        self.assert_refused(constraint(choice=common_pb2.ChoiceList(choices=[])), "sampling.constraint.choice")
        # The stack still serves afterwards.
        self.assertEqual(self.complete(3, constraint(choice=common_pb2.ChoiceList(choices=["ok"]))).text, "ok")

    # --- n > 1 ---

    def worker_prefill_tokens(self):
        """Tokens the worker's prefill computed (prompt tokens not served by the prefix cache)."""
        text = self.s.metrics(self.s.worker_metrics_ports[0])
        self.assertIn("phi_worker_prefill_tokens_total", text)
        return counter(text, "phi_worker_prefill_tokens_total")

    def test_n4_distinct_seeded_samples_one_prefill(self):
        rng = random.Random(4)
        words = "alpha beta gamma delta river stone light number seven table window".split()
        prompt = f"{rng.random()} " + " ".join(rng.choice(words) for _ in range(150))  # a new prefix
        prompt_tokens = len(self.tok.Encode(tokenizer_pb2.EncodeRequest(
            prompts=[tokenizer_pb2.Prompt(text=prompt.encode())]), timeout=10).encodings[0].ids)
        before = self.worker_prefill_tokens()
        r = self.complete(900, prompt=prompt, max_new_tokens=16, n=4, ignore_eos=True)
        computed = self.worker_prefill_tokens() - before
        self.assertEqual(len(r.choices), 4)
        self.assertEqual([ch.index for ch in r.choices], [0, 1, 2, 3])
        self.assertEqual([ch.seed for ch in r.choices], [900, 901, 902, 903])
        self.assertEqual(len({ch.text for ch in r.choices}), 4, [ch.text for ch in r.choices])
        self.assertEqual(r.text, r.choices[0].text)
        bs = self.status.kv_block_size
        print(f"n=4: prompt {prompt_tokens} tokens, block size {bs}, prefill computed {computed:.0f} tokens",
              file=sys.stderr)
        self.assertGreaterEqual(computed, prompt_tokens)
        self.assertLessEqual(computed, prompt_tokens + 4 * (bs - 1),
                             f"prompt of {prompt_tokens} tokens, block size {bs}: {computed} prefilled for n=4")
        self.assertEqual(r.usage.prompt_tokens, prompt_tokens)
        self.assertEqual(r.usage.completion_tokens, 4 * 16)
        for ch in r.choices:
            single = self.complete(ch.seed, prompt=prompt, max_new_tokens=16, ignore_eos=True)
            self.assertEqual(single.text, ch.text, f"choice {ch.index}")
            self.assertEqual(single.finish_reason, ch.finish_reason)

    def test_n4_with_a_constraint(self):
        schema = dict(SCHEMAS)["classification"]
        r = self.complete(31, constraint(json_schema=json.dumps(schema)), n=4)
        self.assertEqual(len(r.choices), 4)
        for ch in r.choices:
            self.assertEqual(ch.finish_reason, STOP, ch.text)
            jsonschema.validate(json.loads(ch.text), schema)

    # --- logit_bias ---

    def token_id(self, text):
        ids = self.tok.Encode(tokenizer_pb2.EncodeRequest(prompts=[tokenizer_pb2.Prompt(text=text.encode())]),
                              timeout=10).encodings[0].ids
        self.assertEqual(len(ids), 1, f"{text!r} is not one token")
        return ids[0]

    def test_logit_bias_plus_100_forces_a_token(self):
        forced = self.token_id(" the")
        for seed in (1, 2, 3):
            r = self.complete(seed, max_new_tokens=8, logit_bias={forced: 100.0}, logprobs=True)
            self.assertEqual([p.token.token_id for p in r.logprobs], [forced] * 8)
            self.assertEqual(r.text, " the" * 8)

    def test_logit_bias_minus_100_forbids_the_greedy_token(self):
        greedy = self.complete(0, temperature=0.0, max_new_tokens=8, logprobs=True)
        first = greedy.logprobs[0].token.token_id
        r = self.complete(0, temperature=0.0, max_new_tokens=8, logprobs=True, logit_bias={first: -100.0})
        ids = [p.token.token_id for p in r.logprobs]
        self.assertNotEqual(ids[0], first)
        self.assertNotIn(first, ids)
        for seed in (5, 6, 7):
            r = self.complete(seed, max_new_tokens=16, logprobs=True, logit_bias={first: -100.0})
            self.assertNotIn(first, [p.token.token_id for p in r.logprobs])

    def test_logit_bias_cannot_break_a_grammar(self):
        # +100 on a token the grammar never allows: the mask still wins.
        banned = self.token_id(" the")
        for seed in (1, 2, 3, 4):
            r = self.complete(seed, constraint(choice=common_pb2.ChoiceList(choices=["yes", "no"])),
                              logit_bias={banned: 100.0})
            self.assertIn(r.text, ("yes", "no"))
            self.assertEqual(r.finish_reason, STOP)

    def test_logit_bias_out_of_range_is_refused_by_name(self):
        vocab = self.status.vocab_size
        for bias in ({vocab: 1.0}, {-1: 1.0}, {5: 100.5}, {5: -101.0}):
            with self.subTest(bias=bias):
                with self.assertRaises(grpc.RpcError) as cm:
                    self.complete(1, max_new_tokens=2, logit_bias=bias)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("logit_bias", cm.exception.details())


if __name__ == "__main__":
    unittest.main(verbosity=2)
