"""phi-tokenizer end to end: Encode, Decode, DecodeStream and Info over real gRPC from a Python
grpcio client, compared with Hugging Face `tokenizers` on the same tokenizer.json; limits,
errors, metrics, and start-up failures for missing or malformed files.

usage: tokenizer_service_test.py PHI_TOKENIZER_BINARY MODEL_DIR
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import phi_testlib  # noqa: E402

BINARY = ""
MODEL = ""
MAX_TEXT_BYTES = 200_000

TEXTS = [
    "Hello world! It's a test; don't PANIC.",
    "def f(x):\n\tif x:\n        return x  # spaces\n",
    "中文字符 and emoji 👩🏽\u200d💻 plus e\u0301 combining, مرحبا",
    "text with <|im_end|> inside and <|endoftext|>",
    "",
    "a\x00b",
    "   many     spaces\n\n\n\nnewlines",
]


class TokenizerServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc
        from tokenizers import Tokenizer
        from phi.v1 import tokenizer_pb2, tokenizer_pb2_grpc
        cls.grpc = grpc
        cls.pb = tokenizer_pb2
        cls.hf = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
        cls.svc = phi_testlib.Service(BINARY, [f"--model={MODEL}", f"--max-text-bytes={MAX_TEXT_BYTES}"],
                                      name="tokenizer")
        cls.svc.wait_healthy()
        cls.channel = grpc.insecure_channel(cls.svc.address)
        cls.stub = tokenizer_pb2_grpc.TokenizerServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        rc = cls.svc.terminate()
        assert rc == 0, f"exit {rc} after SIGTERM:\n{cls.svc.log()}"

    def hf_ids(self, text, parse_special):
        self.hf.encode_special_tokens = not parse_special
        try:
            return self.hf.encode(text, add_special_tokens=False).ids
        finally:
            self.hf.encode_special_tokens = False

    def test_encode_matches_hugging_face(self):
        pb = self.pb
        for parse in (False, True):
            req = pb.EncodeRequest(prompts=[pb.Prompt(text=(t).encode()) for t in TEXTS], parse_special_tokens=parse)
            resp = self.stub.Encode(req, timeout=30)
            self.assertEqual(len(resp.encodings), len(TEXTS))
            for t, e in zip(TEXTS, resp.encodings):
                self.assertEqual(list(e.ids), self.hf_ids(t, parse), f"{t!r} parse_special={parse}")
        self.assertEqual(list(self.stub.Encode(pb.EncodeRequest(prompts=[pb.Prompt(text=("").encode())])).encodings[0].ids), [])

    def test_encode_segments_builds_chatml(self):
        pb = self.pb
        S = pb.Segment
        segs = [S(special_token="<|im_start|>"), S(text="user\nHi <|im_end|> there".encode()), S(special_token="<|im_end|>"),
                S(text="\n".encode()), S(special_token="<|im_start|>"), S(text="assistant\n".encode())]
        resp = self.stub.Encode(pb.EncodeRequest(prompts=[pb.Prompt(segments=pb.SegmentList(segments=segs))]))
        want = (self.hf_ids("<|im_start|>", True) + self.hf_ids("user\nHi <|im_end|> there", False)
                + self.hf_ids("<|im_end|>", True) + self.hf_ids("\n", False) + self.hf_ids("<|im_start|>", True)
                + self.hf_ids("assistant\n", False))
        self.assertEqual(list(resp.encodings[0].ids), want)
        im_end = self.hf.token_to_id("<|im_end|>")
        self.assertEqual(list(resp.encodings[0].ids).count(im_end), 1, "typed <|im_end|> must stay text")
        with self.assertRaises(self.grpc.RpcError) as cm:
            self.stub.Encode(pb.EncodeRequest(prompts=[pb.Prompt(segments=pb.SegmentList(
                segments=[S(special_token="<|nope|>")]))]))
        self.assertEqual(cm.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("<|nope|>", cm.exception.details())

    def test_encode_offsets(self):
        pb = self.pb
        text = "Hello wörld  <|im_end|>"
        e = self.stub.Encode(pb.EncodeRequest(prompts=[pb.Prompt(text=(text).encode())], parse_special_tokens=True,
                                              return_offsets=True)).encodings[0]
        self.assertEqual(len(e.offsets), 2 * len(e.ids))
        raw = text.encode()
        pieces = b"".join(raw[e.offsets[2 * i]:e.offsets[2 * i + 1]] for i in range(len(e.ids)))
        self.assertEqual(pieces, raw)

    def test_text_limit(self):
        pb = self.pb
        with self.assertRaises(self.grpc.RpcError) as cm:
            self.stub.Encode(pb.EncodeRequest(prompts=[pb.Prompt(text=("x" * (MAX_TEXT_BYTES + 1)).encode())]))
        self.assertEqual(cm.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("--max-text-bytes", cm.exception.details())

    def test_invalid_utf8_names_prompt_and_byte_offset(self):
        pb = self.pb
        with self.assertRaises(self.grpc.RpcError) as cm:
            self.stub.Encode(pb.EncodeRequest(prompts=[pb.Prompt(text=b"ok"), pb.Prompt(text=b"abc\xffdef")]))
        self.assertEqual(cm.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("3", cm.exception.details())  # the offending byte's offset

    def test_decode_matches_hugging_face(self):
        pb = self.pb
        # The last sequence starts with a lone UTF-8 lead byte (0xE2 is "â"): U+FFFD.
        seqs = [self.hf_ids(t, True) for t in TEXTS] + [[self.hf.token_to_id("â"), 500, 7]]
        for skip in (False, True):
            resp = self.stub.Decode(pb.DecodeRequest(sequences=[pb.TokenIds(ids=s) for s in seqs],
                                                     skip_special_tokens=skip))
            for s, text in zip(seqs, resp.texts):
                self.assertEqual(text, self.hf.decode(s, skip_special_tokens=skip))

    def test_decode_ids_past_the_vocabulary(self):
        # Ids with no token (a model's padded output rows, which greedy decoding can pick) decode to
        # nothing, as Hugging Face's decode skips them; a negative id is no token id at all.
        pb = self.pb
        size = self.hf.get_vocab_size(with_added_tokens=True)
        resp = self.stub.Decode(pb.DecodeRequest(sequences=[pb.TokenIds(ids=[1, size + 5, 2])]))
        self.assertEqual(resp.texts[0], self.hf.decode([1, size + 5, 2]))
        self.assertEqual(resp.texts[0], self.hf.decode([1, 2]))
        with self.assertRaises(self.grpc.RpcError) as cm:
            self.stub.Decode(pb.DecodeRequest(sequences=[pb.TokenIds(ids=[1, -1])]))
        self.assertEqual(cm.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("-1", cm.exception.details())

    def test_decode_stream_equals_decode(self):
        pb = self.pb
        text = TEXTS[2] + " " + TEXTS[0]
        ids = self.hf_ids(text, True)
        want = self.hf.decode(ids)
        for chunk in (1, 3):
            reqs = [pb.DecodeStreamRequest(ids=ids[i:i + chunk]) for i in range(0, len(ids), chunk)]
            deltas = [r.text_delta for r in self.stub.DecodeStream(iter(reqs), timeout=30)]
            self.assertGreaterEqual(len(deltas), len(reqs))
            self.assertEqual("".join(deltas), want)
            # Some character is split across ids: its first id must yield an empty delta.
            if chunk == 1:
                self.assertIn("", deltas[:len(reqs)])
        # A dangling partial character is flushed as U+FFFD when the client closes.
        lead = self.hf.token_to_id("ð")  # byte F0: starts a 4-byte sequence
        deltas = [r.text_delta for r in self.stub.DecodeStream(iter([pb.DecodeStreamRequest(ids=[lead])]))]
        self.assertEqual("".join(deltas), "\ufffd")
        deltas = [r.text_delta for r in self.stub.DecodeStream(
            iter([pb.DecodeStreamRequest(ids=[1]), pb.DecodeStreamRequest(ids=[10**7])]))]
        self.assertEqual("".join(deltas), self.hf.decode([1]))
        with self.assertRaises(self.grpc.RpcError) as cm:
            list(self.stub.DecodeStream(iter([pb.DecodeStreamRequest(ids=[1]), pb.DecodeStreamRequest(ids=[-3])])))
        self.assertEqual(cm.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("-3", cm.exception.details())

    def test_info(self):
        info = self.stub.Info(self.pb.InfoRequest())
        self.assertEqual(info.vocab_size, self.hf.get_vocab_size(with_added_tokens=True))
        self.assertEqual(info.im_start_token_id, self.hf.token_to_id("<|im_start|>"))
        self.assertEqual(info.im_end_token_id, self.hf.token_to_id("<|im_end|>"))
        self.assertEqual(info.bos_token_id, self.hf.token_to_id("<|endoftext|>"))
        self.assertIn(self.hf.token_to_id("<|im_end|>"), list(info.eos_token_ids))
        names = {s.name: s.id for s in info.special_tokens}
        self.assertEqual(names, {c: self.hf.token_to_id(c) for c in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")})
        self.assertEqual(info.max_batch, 256)  # --max-batch's default: the gateway splits its Decodes to fit

    def test_metrics_count_tokens_and_bytes(self):
        pb = self.pb
        self.stub.Encode(pb.EncodeRequest(prompts=[pb.Prompt(text=("count me please").encode())]))
        self.stub.Decode(pb.DecodeRequest(sequences=[pb.TokenIds(ids=[1, 2, 3])]))
        text = self.svc.scrape()
        for line in ('phi_tokenizer_tokens_total{direction="encode"}', 'phi_tokenizer_tokens_total{direction="decode"}',
                     'phi_tokenizer_bytes_total{direction="encode"}', 'phi_tokenizer_bytes_total{direction="decode"}'):
            values = [l.split()[-1] for l in text.splitlines() if l.startswith(line)]
            self.assertTrue(values and float(values[0]) > 0, f"{line} missing or zero in /metrics")
        self.assertIn('method="Encode"', text)


class StartupFailureTest(unittest.TestCase):
    def run_binary(self, model_dir):
        return subprocess.run([BINARY, "--host=127.0.0.1", "--port=0", "--metrics-port=0", f"--model={model_dir}"],
                              capture_output=True, timeout=60)

    def test_missing_folder(self):
        r = self.run_binary("/nonexistent/model")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"/nonexistent/model", r.stderr)

    def test_malformed_tokenizer_json_names_file_and_location(self):
        with tempfile.TemporaryDirectory() as d:
            for f in os.listdir(MODEL):
                shutil.copy(os.path.join(MODEL, f), d)
            with open(os.path.join(MODEL, "tokenizer.json"), encoding="utf-8") as f:
                spec = json.load(f)
            spec["model"]["merges"][7] = "onlyone"
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(spec, f)
            r = self.run_binary(d)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(f"{d}/tokenizer.json: /model/merges/7".encode(), r.stderr)
            with open(os.path.join(d, "tokenizer.json"), "w") as f:
                f.write('{"model": ')
            r = self.run_binary(d)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(b"JSON parse error at byte", r.stderr)
            spec["model"]["merges"][7] = spec["model"]["merges"][6]
            spec["normalizer"] = {"type": "NFKC"}
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(spec, f)
            r = self.run_binary(d)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(b"/normalizer/type: unsupported normalizer 'NFKC'", r.stderr)


if __name__ == "__main__":
    BINARY, MODEL = sys.argv[1], sys.argv[2]
    phi_testlib.add_proto_path()
    # The generated grpc/health/v1 stubs live beside phi/ but `grpc` is the installed package:
    # extend its search path so that `grpc.health.v1` resolves (phi_testlib imports it so).
    import grpc
    health_dir = os.path.join(os.environ["PHI_PROTO_PYTHON_DIR"], "grpc")
    if health_dir not in grpc.__path__:
        grpc.__path__.append(health_dir)
    unittest.main(argv=[sys.argv[0], "-v"])
