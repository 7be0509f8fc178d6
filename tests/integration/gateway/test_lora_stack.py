#!/usr/bin/env python3
"""LoRA adapters through the gateway, with the real phi-tokenizer, phi-worker and phi-gateway on
loopback (stack.py), the random-weight tiny model and random PEFT adapters made by
tools/make_lora.py (peft itself), API keys on:
  - an adapter given to the worker at start (--lora) is listed by the `openai` client's
    models.list() and by gRPC ListModels with its parent, the base model;
  - chat with model=<adapter> (greedy) returns text that differs from the base model's and
    equals a second call; the request metrics carry model="<adapter>";
  - POST /v1/load_lora_adapter without a key or with a wrong one is 401, with the key 200 and
    vLLM's plain-text success line; the adapter is then listed and served; a missing folder is
    a 400 naming it; unload is 200, after which the name is a 404 model_not_found (as is any
    unknown model), listing what is served;
  - with two worker groups, an adapter loaded over HTTP goes to both, and a group that restarts
    without it gets it back from the gateway (reconciled after a health round).
"""
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from phi_testlib import make_lora  # noqa: E402
from http_client import call, call_json  # noqa: E402
import openai  # noqa: E402
from phi.v1 import gateway_pb2, worker_pb2  # noqa: E402

KEY = "lora-test-key"
PROMPT = [{"role": "user", "content": "Write a short story about a cat."}]


class LoraStackTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="phi-lora-")
        model = os.environ["PHI_TEST_MODEL"]
        cls.started = os.path.join(cls.tmp.name, "started")
        cls.loaded = os.path.join(cls.tmp.name, "loaded")
        make_lora(model, cls.started, seed=1, rank=8, targets="all")
        make_lora(model, cls.loaded, seed=2, rank=4, targets="attention")
        cls.s = stack.Stack(workers=1, gateway_env={"PHI_API_KEYS": KEY},
                            worker_args=["--lora", f"started={cls.started}"])
        cls.port = cls.s.http_port
        cls.client = openai.OpenAI(base_url=f"http://127.0.0.1:{cls.port}/v1", api_key=KEY, max_retries=0,
                                   timeout=120)
        cls.base = next(m.id for m in cls.client.models.list().data if m.model_dump().get("parent") is None)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()
        cls.tmp.cleanup()

    def chat(self, model):
        r = self.client.chat.completions.create(model=model, messages=PROMPT, temperature=0, max_tokens=24)
        self.assertEqual(r.model, model)
        return r.choices[0].message.content

    def post(self, path, body, key=KEY):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return call(self.port, "POST", path, body, headers, timeout=60)

    def models(self):
        return {m.id: m.model_dump() for m in self.client.models.list().data}

    def test_started_adapter_is_listed_with_its_parent_and_served(self):
        models = self.models()
        self.assertIn("started", models)
        self.assertEqual(models["started"]["parent"], self.base)
        self.assertEqual(models["started"]["root"], self.started)
        resp = self.s.chat_stub().ListModels(gateway_pb2.ListModelsRequest(), timeout=10,
                                             metadata=[("authorization", "Bearer " + KEY)])
        by_name = {m.name: m for m in resp.models}
        self.assertEqual(by_name["started"].parent, self.base)
        self.assertEqual(by_name[self.base].parent, "")

        base = self.chat(self.base)
        adapted = self.chat("started")
        self.assertNotEqual(adapted, base)
        self.assertEqual(self.chat("started"), adapted)
        self.assertEqual(self.chat(self.base), base)
        metrics = self.s.metrics(self.s.metrics_port)
        self.assertIn('phi_gateway_requests_total{route="http_chat_completions",code="OK",model="started"}', metrics)
        self.assertIn('phi_gateway_completion_tokens_total{model="started"}', metrics)

    def test_load_and_unload_over_http(self):
        body = {"lora_name": "loaded", "lora_path": self.loaded}
        for key in (None, "wrong-key"):
            status, _, text = self.post("/v1/load_lora_adapter", body, key)
            self.assertEqual(status, 401, text)
        self.assertNotIn("loaded", self.models())

        status, headers, text = self.post("/v1/load_lora_adapter", body)
        self.assertEqual(status, 200, text)
        self.assertEqual(text.decode(), "Success: LoRA adapter 'loaded' added successfully.")
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        self.assertEqual(self.models()["loaded"]["parent"], self.base)
        loaded = self.chat("loaded")
        self.assertNotEqual(loaded, self.chat(self.base))
        self.assertEqual(self.chat("loaded"), loaded)

        status, _, err = call_json(self.port, "POST", "/v1/load_lora_adapter", body,
                                   {"Authorization": f"Bearer {KEY}"})
        self.assertEqual(status, 400, err)
        self.assertIn("already been loaded", err["error"]["message"])

        status, _, text = self.post("/v1/unload_lora_adapter", {"lora_name": "loaded"}, None)
        self.assertEqual(status, 401, text)
        status, _, text = self.post("/v1/unload_lora_adapter", {"lora_name": "loaded"})
        self.assertEqual(status, 200, text)
        self.assertEqual(text.decode(), "Success: LoRA adapter 'loaded' removed successfully.")
        self.assertNotIn("loaded", self.models())
        with self.assertRaises(openai.NotFoundError) as e:
            self.chat("loaded")
        self.assertEqual(e.exception.body["code"], "model_not_found")
        status, _, err = call_json(self.port, "POST", "/v1/unload_lora_adapter", {"lora_name": "loaded"},
                                   {"Authorization": f"Bearer {KEY}"})
        self.assertEqual(status, 400, err)

    def test_missing_folder_is_a_400_naming_it(self):
        missing = os.path.join(self.tmp.name, "no-such-adapter")
        status, _, err = call_json(self.port, "POST", "/v1/load_lora_adapter",
                                   {"lora_name": "missing", "lora_path": missing},
                                   {"Authorization": f"Bearer {KEY}"}, timeout=60)
        self.assertEqual(status, 400, err)
        self.assertIn(missing, err["error"]["message"])
        self.assertNotIn("missing", self.models())
        status, _, err = call_json(self.port, "POST", "/v1/load_lora_adapter", {"lora_name": 5, "lora_path": "/x"},
                                   {"Authorization": f"Bearer {KEY}"})
        self.assertEqual((status, err["error"]["param"]), (400, "lora_name"), err)

    def test_unknown_model_is_404_listing_what_is_served(self):
        with self.assertRaises(openai.NotFoundError) as e:
            self.chat("no-such-model")
        self.assertEqual(e.exception.body["code"], "model_not_found")
        self.assertIn(f"'{self.base}'", e.exception.body["message"])
        self.assertIn("'started'", e.exception.body["message"])


class LoraReconcileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="phi-lora-")
        cls.path = os.path.join(cls.tmp.name, "a")
        make_lora(os.environ["PHI_TEST_MODEL"], cls.path, seed=3, rank=4, targets="mlp")
        cls.s = stack.Stack(workers=2)

    @classmethod
    def tearDownClass(cls):
        cls.s.close()
        cls.tmp.cleanup()

    def adapters(self, i):
        st = self.s.worker_stub(i).GetStatus(worker_pb2.GetStatusRequest(), timeout=2)
        return [a.name for a in st.adapters] if st.ready else None

    def test_a_restarted_group_gets_the_adapter_back(self):
        status, _, text = call(self.s.http_port, "POST", "/v1/load_lora_adapter",
                               {"lora_name": "a", "lora_path": self.path}, timeout=60)
        self.assertEqual(status, 200, text)
        self.assertEqual([self.adapters(0), self.adapters(1)], [["a"], ["a"]])
        # Worker 1 restarts on its port, without the adapter.
        old = self.s.procs[2]
        self.assertEqual(old.name, "worker1")
        old.stop()
        self.s.procs.append(stack.Proc("worker1-restarted", old.proc.args))
        deadline = time.time() + 60
        got = None
        while time.time() < deadline and got != ["a"]:
            try:
                got = self.adapters(1)
            except stack.grpc.RpcError:
                got = None
            time.sleep(0.1)
        self.assertEqual(got, ["a"])
        chat = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
        for _ in range(4):
            status, _, body = call_json(self.s.http_port, "POST", "/v1/chat/completions", chat, timeout=60)
            self.assertEqual(status, 200, body)


if __name__ == "__main__":
    unittest.main(verbosity=2)
