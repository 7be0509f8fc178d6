#!/usr/bin/env python3
"""`phi-worker --quantization int8` through the whole stack: the real phi-tokenizer, an INT8
phi-worker and phi-gateway on loopback. The worker's greedy tokens equal transformers'
PhiForCausalLM run on the INT8-dequantized weights (the oracle's quantize_int8, the same
scheme as services/worker/backends/cpu/matmul.h); chat through the gateway works, unary and
streamed alike; the worker exports what it computes with; bad flag values and combinations
exit 2 naming the flag."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conformance", "model"))
import stack  # noqa: E402
from stack import gateway_pb2, worker_pb2  # noqa: E402
from phi.v1 import common_pb2  # noqa: E402
import make_oracle  # noqa: E402

GREEDY = 24


def worker_greedy(prompt, n):
    return worker_pb2.GenerateRequest(
        prompt_ids=prompt, stopping=common_pb2.StoppingCriteria(max_new_tokens=n, ignore_eos=True))


class QuantizedStackTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack(workers=1, worker_args=["--quantization", "int8"])

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def test_worker_exports_its_kernels_and_int8_weights(self):
        text = self.s.metrics(self.s.worker_metrics_ports[0])
        info = [line for line in text.splitlines() if line.startswith("phi_worker_backend_info{")]
        self.assertEqual(len(info), 1, text)
        self.assertIn('device="cpu"', info[0])
        self.assertIn('weights="int8"', info[0])
        self.assertRegex(info[0], r'isa="(avx512bf16|avx512|avx2|portable)"')
        self.assertRegex(info[0], r'kernel="[a-z0-9]+-(fma-)?int8"')
        self.assertTrue(info[0].endswith(" 1"), info[0])

    def test_greedy_tokens_equal_transformers_on_the_dequantized_weights(self):
        import torch
        from transformers import PhiForCausalLM
        model = PhiForCausalLM.from_pretrained(self.s.model, torch_dtype=torch.float32,
                                               attn_implementation="eager").eval()
        int8 = make_oracle.quantize_int8(model)
        stub = self.s.worker_stub()
        for prompt in ([5, 17, 99, 3, 42, 7, 250, 11], list(range(30, 70))):
            got = [t for m in stub.Generate(worker_greedy(prompt, GREEDY), timeout=60) for t in m.token_ids]
            with torch.no_grad():
                want = make_oracle.greedy(int8, torch.tensor([prompt]))[0]
            self.assertEqual(got, want[:GREEDY], f"prompt {prompt}")

    def test_chat_through_the_gateway(self):
        req = gateway_pb2.ChatRequest(
            messages=[gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_SYSTEM, content="You are a helpful assistant."),
                      gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_USER, content="Name three colours.")],
            stopping=common_pb2.StoppingCriteria(max_new_tokens=16, ignore_eos=True))
        stub = self.s.chat_stub()
        unary = stub.Chat(req, timeout=30)
        self.assertEqual(unary.usage.completion_tokens, 16)
        streamed = "".join(m.text_delta for m in stub.ChatStream(req, timeout=30))
        self.assertEqual(streamed, unary.text)

    def test_bad_values_and_combinations_exit_2_naming_the_flag(self):
        binary, model = os.environ["PHI_WORKER_BIN"], self.s.model
        for args, flag in ((["--quantization", "int4"], "--quantization"),
                           (["--quantization", "int8", "--dtype", "f32"], "--quantization"),
                           (["--cpu-kernels", "avx9"], "--cpu-kernels"),
                           (["--device", "cuda", "--quantization", "int8"], "--"),
                           (["--device", "cuda", "--cpu-kernels", "avx2"], "--")):
            r = subprocess.run([binary, "--model", model, "--port", "0", "--metrics-port", "0"] + args,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
            self.assertIn(flag, r.stderr, args)


if __name__ == "__main__":
    unittest.main(verbosity=2)
