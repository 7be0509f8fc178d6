#!/usr/bin/env python3
"""Gateway integration: the real phi-tokenizer, phi-worker and phi-gateway on loopback, driven by
a Python grpcio client (stubs generated from proto/phi/v1) and the official `openai` client."""
import os
import re
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import grpc, gateway_pb2, worker_pb2  # noqa: E402
from phi.v1 import common_pb2  # noqa: E402

USER, ASSISTANT, SYSTEM = gateway_pb2.ROLE_USER, gateway_pb2.ROLE_ASSISTANT, gateway_pb2.ROLE_SYSTEM


def msg(role, content):
    return gateway_pb2.ChatMessage(role=role, content=content)


def greedy(messages, n=16, **kw):
    return gateway_pb2.ChatRequest(messages=messages, stopping=common_pb2.StoppingCriteria(max_new_tokens=n, **kw))


def counter(metrics_text, name, **labels):
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class GatewayStackTest(unittest.TestCase):
    """One stack (tokenizer, two workers, an open gateway and one with API keys) for every test;
    test_zz_* kill parts of it and run last (unittest runs methods in name order)."""

    @classmethod
    def setUpClass(cls):
        cls.s = stack.Stack(workers=2)
        cls.stub = cls.s.chat_stub()
        cls.auth_port, cls.auth_http_port, _ = cls.s.add_gateway(
            env={"PHI_API_KEYS": "key-one,key-two"}, args=["--max-concurrent-per-key", "1"])
        cls.auth_stub = cls.s.chat_stub(cls.auth_port)
        cls.local_port, _, _ = cls.s.add_gateway(args=["--local-decode", cls.s.model])
        cls.local_stub = cls.s.chat_stub(cls.local_port)
        cls.tok_local_port, _, _ = cls.s.add_gateway(args=["--local-tokenizer", cls.s.model])
        cls.tok_local_stub = cls.s.chat_stub(cls.tok_local_port)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()

    def test_multi_turn_chat_matches_hf_template_token_count(self):
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(self.s.model)
        conv = [msg(SYSTEM, "You are terse."), msg(USER, "Hello there! ünïcödé 日本 😀")]
        for turn in range(3):
            r = self.stub.Chat(greedy(conv), timeout=30)
            self.assertGreater(r.usage.completion_tokens, 0)
            self.assertEqual(r.model, os.path.basename(self.s.model.rstrip("/")))
            roles = {SYSTEM: "system", USER: "user", ASSISTANT: "assistant"}
            expected = hf.apply_chat_template([{"role": roles[m.role], "content": m.content} for m in conv],
                                              tokenize=True, add_generation_prompt=True)
            self.assertEqual(r.usage.prompt_tokens, len(expected), f"turn {turn}")
            conv += [msg(ASSISTANT, r.text), msg(USER, f"And turn {turn}?  \n\t spaces")]

    def test_streaming_and_unary_give_the_same_text_and_concurrency_is_deterministic(self):
        req = greedy([msg(USER, "Tell me a story.")], n=24)
        unary = self.stub.Chat(req, timeout=30)
        parts, last = [], None
        for m in self.stub.ChatStream(req, timeout=30):
            parts.append(m.text_delta)
            last = m
        self.assertEqual("".join(parts), unary.text)
        self.assertEqual(last.finish_reason, unary.finish_reason)
        self.assertEqual(last.usage.completion_tokens, unary.usage.completion_tokens)
        results = [None] * 8

        def run(i):
            results[i] = self.stub.Chat(req, timeout=60).text
        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        self.assertEqual(results, [unary.text] * 8)
        # A gateway decoding in-process (--local-decode) streams the same text.
        local = "".join(m.text_delta for m in self.local_stub.ChatStream(req, timeout=30))
        self.assertEqual(local, unary.text)
        self.assertEqual(self.local_stub.Chat(req, timeout=30).text, unary.text)

    def test_local_tokenizer_matches_the_tokenizer_service(self):
        # --local-tokenizer encodes and decodes in-process: every id and text must equal the
        # default path's (the tokenizer service), including typed control tokens staying text.
        for messages in ([msg(USER, "Tell me a story.")],
                         [msg(SYSTEM, ""), msg(USER, "héllo 🌍\n\n  tabs\t<|im_end|><|im_start|>assistant"),
                          msg(ASSISTANT, "ok"), msg(USER, "again   ")]):
            req = greedy(messages, n=12)
            want = self.stub.Chat(req, timeout=30)
            got = self.tok_local_stub.Chat(req, timeout=30)
            self.assertEqual(got.text, want.text)
            self.assertEqual(got.usage.prompt_tokens, want.usage.prompt_tokens)
            self.assertEqual("".join(m.text_delta for m in self.tok_local_stub.ChatStream(req, timeout=30)), want.text)
        creq = gateway_pb2.CompleteRequest(prompt="The quick <|im_end|> brown fox", echo=True, prompt_logprobs=True,
                                           logprobs=True,
                                           stopping=common_pb2.StoppingCriteria(max_new_tokens=4, ignore_eos=True))
        want, got = self.stub.Complete(creq, timeout=30), self.tok_local_stub.Complete(creq, timeout=30)
        self.assertEqual(got.text, want.text)
        self.assertEqual([(p.token.token_id, p.token.text) for p in got.prompt_logprobs],
                         [(p.token.token_id, p.token.text) for p in want.prompt_logprobs])
        self.assertEqual([(p.token.token_id, p.token.text) for p in got.logprobs],
                         [(p.token.token_id, p.token.text) for p in want.logprobs])

    def test_cancellation_reaches_the_worker(self):
        workers = [self.s.worker_stub(i) for i in range(2)]

        def running():
            return sum(w.GetStatus(worker_pb2.GetStatusRequest(), timeout=5).running for w in workers)

        def cancelled():
            return sum(counter(self.s.metrics(p), "phi_worker_requests_total", finish_reason="cancelled")
                       for p in self.s.worker_metrics_ports)
        before = cancelled()
        req = greedy([msg(USER, "Count forever.")], n=1900, ignore_eos=True)
        call = self.stub.ChatStream(req, timeout=60)
        got = 0
        for m in call:
            got += len(m.text_delta) > 0
            if got >= 2:
                break
        self.assertEqual(running(), 1)
        call.cancel()
        t0 = time.time()
        while running() > 0 and time.time() - t0 < 5:
            time.sleep(0.02)
        self.assertEqual(running(), 0)
        self.assertEqual(cancelled(), before + 1)

    def test_stop_strings_cut_the_text(self):
        base = self.stub.Chat(greedy([msg(USER, "Say something long.")], n=32, ignore_eos=True), timeout=30).text
        self.assertGreater(len(base), 12, base)
        stop = base[8:11]
        cut = base.index(stop)
        r = self.stub.Chat(greedy([msg(USER, "Say something long.")], n=32, ignore_eos=True, stop=[stop]),
                           timeout=30)
        self.assertEqual(r.text, base[:cut])
        self.assertEqual(r.finish_reason, common_pb2.FINISH_REASON_STOP_STRING)
        streamed = "".join(m.text_delta for m in self.stub.ChatStream(
            greedy([msg(USER, "Say something long.")], n=32, ignore_eos=True, stop=[stop]), timeout=30))
        self.assertEqual(streamed, base[:cut])

    def test_invalid_requests_name_the_field(self):
        cases = [
            (gateway_pb2.ChatRequest(messages=[msg(USER, "x")],
                                     sampling=common_pb2.SamplingParams(temperature=-1)), "sampling.temperature"),
            (gateway_pb2.ChatRequest(), "messages"),
            (gateway_pb2.ChatRequest(messages=[msg(ASSISTANT, "x")]), "role user"),
            (greedy([msg(USER, "x")], n=100000), "stopping.max_new_tokens"),
            (gateway_pb2.ChatRequest(messages=[msg(USER, "x"), msg(SYSTEM, "late")]), "messages[1].role"),
        ]
        for req, needle in cases:
            with self.assertRaises(grpc.RpcError) as e:
                self.stub.Chat(req, timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, needle)
            self.assertIn(needle, e.exception.details())
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Chat(gateway_pb2.ChatRequest(model="nope", messages=[msg(USER, "x")]), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Complete(gateway_pb2.CompleteRequest(prompt=""), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_complete_echo_and_prompt_logprobs(self):
        r = self.stub.Complete(gateway_pb2.CompleteRequest(
            prompt="The quick brown fox", echo=True, prompt_logprobs=True, logprobs=True,
            stopping=common_pb2.StoppingCriteria(max_new_tokens=4, ignore_eos=True)), timeout=30)
        self.assertTrue(r.text.startswith("The quick brown fox"))
        self.assertEqual(len(r.prompt_logprobs), r.usage.prompt_tokens - 1)
        self.assertEqual(len(r.logprobs), 4)
        self.assertTrue(all(p.token.logprob <= 0 for p in r.prompt_logprobs))
        self.assertEqual("".join(p.token.text for p in r.prompt_logprobs), " quick brown fox"[
            len(" quick brown fox") - len("".join(p.token.text for p in r.prompt_logprobs)):])

    def test_openai_client(self):
        import openai
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.s.http_port}/v1", api_key="unused")
        models = client.models.list()
        self.assertEqual(len(models.data), 1)
        messages = [{"role": "user", "content": "Hi from openai"}]
        full = client.chat.completions.create(model=models.data[0].id, messages=messages, max_tokens=20,
                                              temperature=0)
        chunks = client.chat.completions.create(model=models.data[0].id, messages=messages, max_tokens=20,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True})
        text, usage, finish = "", None, None
        for c in chunks:
            if c.choices:
                text += c.choices[0].delta.content or ""
                finish = c.choices[0].finish_reason or finish
            if c.usage:
                usage = c.usage
        self.assertEqual(text, full.choices[0].message.content)
        self.assertEqual(finish, full.choices[0].finish_reason)
        self.assertEqual(usage.completion_tokens, full.usage.completion_tokens)
        grpc_text = self.stub.Chat(greedy([msg(USER, "Hi from openai")], n=20), timeout=30).text
        self.assertEqual(text, grpc_text)
        # Legacy completions as lm-evaluation-harness scores them: echo, logprobs, max_tokens 0.
        comp = client.completions.create(model=models.data[0].id, prompt="one two three", echo=True,
                                         logprobs=1, max_tokens=0, temperature=0)
        lp = comp.choices[0].logprobs
        self.assertEqual(comp.choices[0].text, "one two three")
        self.assertEqual(len(lp.tokens), comp.usage.prompt_tokens)
        self.assertIsNone(lp.token_logprobs[0])
        self.assertTrue(all(x <= 0 for x in lp.token_logprobs[1:]))
        self.assertEqual("".join(lp.tokens), "one two three")
        with self.assertRaises(openai.BadRequestError) as e:
            client.chat.completions.create(model=models.data[0].id, messages=messages, temperature=500)
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("temperature", e.exception.body["message"])
        with self.assertRaises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=messages)
        health = urllib.request.urlopen(f"http://127.0.0.1:{self.s.http_port}/health", timeout=5)
        self.assertEqual(health.status, 200)

    def test_metrics(self):
        self.stub.Chat(greedy([msg(USER, "metrics")], n=4), timeout=30)
        text = self.s.metrics(self.s.metrics_port)
        self.assertGreaterEqual(counter(text, "phi_gateway_requests_total", route="chat", code="OK"), 1)
        for name in ["phi_gateway_time_to_first_token_seconds_bucket", "phi_gateway_inter_token_latency_seconds",
                     "phi_gateway_e2e_latency_seconds", "phi_gateway_tokenizer_duration_seconds",
                     "phi_gateway_prompt_tokens_total", "phi_gateway_completion_tokens_total",
                     "phi_gateway_requests_in_flight", 'phi_gateway_worker_groups{state="ready"} 2']:
            self.assertIn(name, text)

    def test_auth(self):
        req = greedy([msg(USER, "auth")], n=4)
        for md in ([], [("authorization", "Bearer wrong")]):
            with self.assertRaises(grpc.RpcError) as e:
                self.auth_stub.Chat(req, metadata=md, timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertGreater(self.auth_stub.Chat(req, metadata=[("authorization", "Bearer key-two")], timeout=30)
                           .usage.completion_tokens, 0)
        import openai
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{self.auth_http_port}/v1", api_key="wrong").models.list()
        ok = openai.OpenAI(base_url=f"http://127.0.0.1:{self.auth_http_port}/v1", api_key="key-one").models.list()
        self.assertEqual(len(ok.data), 1)

    def test_per_key_limit(self):
        md = [("authorization", "Bearer key-one")]
        call = self.auth_stub.ChatStream(greedy([msg(USER, "long")], n=1500, ignore_eos=True), metadata=md,
                                         timeout=60)
        next(iter(call))
        with self.assertRaises(grpc.RpcError) as e:
            self.auth_stub.Chat(greedy([msg(USER, "x")], n=2), metadata=md, timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        call.cancel()

    def _gateway_argv(self, port, http_port, *extra):
        return [os.environ["PHI_GATEWAY_BIN"], "--port", str(port), "--http-port", str(http_port),
                "--metrics-port", "0", "--tokenizer", f"127.0.0.1:{self.s.tok_port}",
                "--workers", ",".join(f"127.0.0.1:{w}" for w in self.s.worker_ports), *extra]

    def test_tls_on_the_grpc_and_https_ports(self):
        import http.client
        import shutil
        import ssl
        import subprocess
        import tempfile
        import openai
        if not shutil.which("openssl"):
            self.skipTest("openssl not installed: cannot make a test certificate")
        d = tempfile.mkdtemp()

        def make_cert(name):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/{name}-key.pem",
                            "-out", f"{d}/{name}.pem", "-days", "1", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        make_cert("cert")
        make_cert("other")
        # A bad pair is refused at start-up with the flag and file named, before anything listens.
        for key, want in ((f"{d}/other-key.pem", "does not belong to --tls-cert"),
                          (f"{d}/cert.pem", "--tls-key: '" + f"{d}/cert.pem"),
                          (f"{d}/missing.pem", "--tls-key: '" + f"{d}/missing.pem")):
            r = subprocess.run(self._gateway_argv(stack.free_port(), 0, "--tls-cert", f"{d}/cert.pem", "--tls-key", key),
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(want, r.stderr)

        port, http_port = stack.free_port(), stack.free_port()
        p = stack.Proc("gateway-tls", self._gateway_argv(port, http_port, "--tls-cert", f"{d}/cert.pem",
                                                         "--tls-key", f"{d}/cert-key.pem"))
        self.s.procs.append(p)
        creds = grpc.ssl_channel_credentials(open(f"{d}/cert.pem", "rb").read())

        def stub():
            return stack.gateway_pb2_grpc.ChatServiceStub(grpc.secure_channel(f"localhost:{port}", creds))
        stack.wait("TLS gateway", lambda: stub().ListModels(gateway_pb2.ListModelsRequest(), timeout=1).models,
                   [p])
        grpc_text = stub().Chat(greedy([msg(USER, "over TLS")], n=6), timeout=30).text
        with self.assertRaises(grpc.RpcError):  # plaintext clients are refused
            self.s.chat_stub(port).ListModels(gateway_pb2.ListModelsRequest(), timeout=2)

        # The OpenAI-compatible API over HTTPS, trusting only the test CA.
        client = openai.OpenAI(base_url=f"https://localhost:{http_port}/v1", api_key="unused",
                               http_client=openai.DefaultHttpxClient(
                                   verify=ssl.create_default_context(cafile=f"{d}/cert.pem")))
        model = client.models.list().data[0].id
        messages = [{"role": "user", "content": "over TLS"}]
        full = client.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0)
        self.assertEqual(full.choices[0].message.content, grpc_text)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=model, messages=messages, max_tokens=6, temperature=0, stream=True) if c.choices)
        self.assertEqual(streamed, grpc_text)
        # A client that does not trust the certificate is refused by its TLS check...
        with self.assertRaises(openai.APIConnectionError):
            openai.OpenAI(base_url=f"https://localhost:{http_port}/v1", api_key="unused", max_retries=0,
                          http_client=openai.DefaultHttpxClient(verify=True)).models.list()
        # ...and plaintext HTTP to the HTTPS port gets no HTTP answer.
        with self.assertRaises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5).read()

    def test_sigterm_drains_streams_then_exits_promptly(self):
        port = stack.free_port()
        p = stack.Proc("gateway-drain", self._gateway_argv(port, 0, "--shutdown-grace-seconds", "20"))
        self.s.procs.append(p)
        stub = self.s.chat_stub(port)
        stack.wait("gateway", lambda: stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=1).models, [p])
        # An idle but connected client must not hold the exit (gRPC waits for connections).
        idle = self.s.chat_stub(port)
        idle.ListModels(gateway_pb2.ListModelsRequest(), timeout=5)
        stream = stub.ChatStream(greedy([msg(USER, "drain me")], n=1500, ignore_eos=True), timeout=60)
        it = iter(stream)
        next(it)
        p.proc.terminate()
        t_signal = time.time()
        last = None
        for last in it:  # the admitted stream runs to its end
            pass
        self.assertEqual(last.usage.completion_tokens, 1500)
        t_stream_end = time.time()
        p.proc.wait(timeout=20)
        t_exit = time.time()
        self.assertEqual(p.proc.returncode, 0, p.tail())
        # Generous bounds (loaded CI machine). The gateway waits 1 s after the last reply before it
        # cuts idle connections; before that fix an idle gateway took ~4 s to exit.
        self.assertLess(t_exit - t_stream_end, 2.5, p.tail())
        self.assertLess(t_exit - t_signal, 20.0)

        # Idle gateway with a connected client: SIGTERM exits well under 4 s.
        port = stack.free_port()
        p = stack.Proc("gateway-idle", self._gateway_argv(port, 0))
        self.s.procs.append(p)
        stub = self.s.chat_stub(port)
        stack.wait("gateway", lambda: stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=1).models, [p])
        stub.Chat(greedy([msg(USER, "then idle")], n=4), timeout=30)
        time.sleep(1.0)
        t0 = time.time()
        p.proc.terminate()
        p.proc.wait(timeout=20)
        self.assertEqual(p.proc.returncode, 0, p.tail())
        self.assertLess(time.time() - t0, 1.5, p.tail())  # ~0.05 s on an idle machine

    def test_zz_dead_worker_is_routed_around(self):
        self.s.procs[2].proc.kill()  # worker1
        self.s.procs[2].proc.wait()
        for _ in range(4):  # every request succeeds: retried on the live group before its first token
            r = self.stub.Chat(greedy([msg(USER, "still there?")], n=4), timeout=30)
            self.assertGreater(r.usage.completion_tokens, 0)
        time.sleep(0.5)
        text = self.s.metrics(self.s.metrics_port)
        self.assertIn('phi_gateway_worker_groups{state="unreachable"} 1', text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
