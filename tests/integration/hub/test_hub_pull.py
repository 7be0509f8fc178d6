"""`./phi pull` (tools/hub/hub_pull.py) against a fake Hugging Face Hub on loopback (fake_hub.py,
through HF_ENDPOINT): a download whose files equal the repo's byte for byte and that phi-worker
serves with the generation_config.json defaults; a connection dropped mid-file, resumed by the next
run; a wrong sha256, refused and removed; unknown repo, gated repo without a token, not a Phi model,
no safetensors, unknown revision, no network (and the cache used offline), disk full: each one line
on stderr and exit 1. With the three binaries, `phi up --model MODEL_ID` serves a pulled model.

usage: test_hub_pull.py   (env: PHI_WORKER_BIN; optional PHI_TOKENIZER_BIN, PHI_GATEWAY_BIN,
                           PHI_PROTO_PYTHON_DIR for the worker and `phi up` cases)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from fake_hub import FakeHub, Repo  # noqa: E402
import phi_testlib  # noqa: E402

PULL = os.path.join(REPO, "tools", "hub", "hub_pull.py")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# What the worker and tokenizer need from a model folder (make_model.py writes all of them).
WANTED = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt"]
# huggingface_hub reads and writes 10 MiB at a time, so a cut after 12 MB keeps 10 MiB to resume from.
CHUNK = 10 * 1024 * 1024
# The model's own defaults, served back by the worker.
GENERATION = {"bos_token_id": 0, "eos_token_id": [1, 2], "do_sample": True, "temperature": 0.7, "top_p": 0.9,
              "top_k": 20, "repetition_penalty": 1.1, "max_new_tokens": 7}


def make_model(out):
    # Big enough (17 MB of f32 weights) for a cut that leaves a whole chunk behind.
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_model.py"), "--out", out, "--preset", "tiny",
                    "--dtype", "f32", "--seed", "11", "--hidden-size", "256", "--intermediate-size", "1024",
                    "--num-layers", "4"], check=True, capture_output=True)
    files = {}
    for n in sorted(os.listdir(out)):
        with open(os.path.join(out, n), "rb") as f:
            files[n] = f.read()
    gen = json.loads(files["generation_config.json"])
    gen.update({k: v for k, v in GENERATION.items() if not k.endswith("token_id")})
    files["generation_config.json"] = json.dumps(gen, indent=2).encode()
    files["README.md"] = b"# a model card the worker does not need\n"
    files["pytorch_model.bin"] = b"not needed either"
    return files


class HubPullTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="phi-hub-test-")
        cls.files = make_model(os.path.join(cls.tmp, "model"))
        assert len(cls.files["model.safetensors"]) > CHUNK + 2_000_000
        cls.hub = FakeHub()
        cls.hub.repos["acme/tiny-phi"] = Repo(files=dict(cls.files), commit=COMMIT)

    @classmethod
    def tearDownClass(cls):
        cls.hub.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="hf-home-", dir=self.tmp)  # a fresh cache per case
        self.hub.drop_after.clear()
        self.hub.corrupt.clear()

    def env(self, endpoint=None, token=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        e.update(HF_ENDPOINT=endpoint or self.hub.url, HF_HOME=self.home, HF_HUB_DISABLE_PROGRESS_BARS="1",
                 HF_HUB_DISABLE_TELEMETRY="1", PHI_HUB_VERIFIED_DIR=os.path.join(self.home, "verified"))
        if token:
            e["HF_TOKEN"] = token
        return e

    def pull(self, *args, **env_kw):
        return subprocess.run([sys.executable, PULL, *args], env=self.env(**env_kw), capture_output=True, text=True,
                              timeout=300)

    def expect_one_line_error(self, r, *needles):
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("phi pull: "), lines[0])
        for n in needles:
            self.assertIn(n, lines[0])
        return lines[0]

    def snapshot(self, repo="acme/tiny-phi", commit=COMMIT):
        return os.path.join(self.home, "hub", "models--" + repo.replace("/", "--"), "snapshots", commit)

    def add_repo(self, name, **kw):
        self.hub.repos[name] = Repo(files=dict(kw.pop("files", self.files)), commit=COMMIT, **kw)
        return name

    # -----------------------------------------------------------------------------------------

    def test_success_files_match_and_a_second_run_is_cached(self):
        r = self.pull("acme/tiny-phi")
        self.assertEqual(r.returncode, 0, r.stderr)
        folder = r.stdout.strip()
        self.assertEqual(folder, self.snapshot())
        self.assertEqual(sorted(os.listdir(folder)), sorted(WANTED))  # no README, no .bin
        for name in WANTED:
            with open(os.path.join(folder, name), "rb") as f:
                self.assertEqual(f.read(), self.files[name], name)
        with open(os.path.join(self.home, "hub", "models--acme--tiny-phi", "refs", "main")) as f:
            self.assertEqual(f.read(), COMMIT)
        gets = len(self.hub.gets_of("model.safetensors"))
        r2 = self.pull("acme/tiny-phi", "--revision", COMMIT)
        self.assertEqual((r2.returncode, r2.stdout.strip()), (0, folder), r2.stderr)
        self.assertEqual(len(self.hub.gets_of("model.safetensors")), gets)  # nothing downloaded again

    def test_sharded_weights_come_with_every_shard(self):
        from safetensors.numpy import load, save
        tensors = load(self.files["model.safetensors"])
        names = sorted(tensors)
        shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        files = {k: v for k, v in self.files.items() if k != "model.safetensors"}
        for shard, keys in shards.items():
            files[shard] = save({k: tensors[k] for k in keys})
        files["model.safetensors.index.json"] = json.dumps(
            {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}).encode()
        files["model-00003-of-00002.safetensors"] = b"a stray file no index names"
        self.add_repo("acme/sharded", files=files)
        r = self.pull("acme/sharded")
        self.assertEqual(r.returncode, 0, r.stderr)
        want = sorted(set(WANTED) - {"model.safetensors"} | set(shards) | {"model.safetensors.index.json"})
        self.assertEqual(sorted(os.listdir(r.stdout.strip())), want)
        for name in want:
            with open(os.path.join(r.stdout.strip(), name), "rb") as f:
                self.assertEqual(f.read(), files[name], name)

    def test_dropped_connection_resumes_on_the_next_run(self):
        self.add_repo("acme/flaky")
        self.hub.drop_after["model.safetensors"] = CHUNK + 1_500_000
        before = len(self.hub.gets_of("model.safetensors"))
        r = self.pull("acme/flaky")
        self.expect_one_line_error(r, "model.safetensors", "cut off", "again")
        blobs = os.path.join(self.home, "hub", "models--acme--flaky", "blobs")
        partial = [f for f in os.listdir(blobs) if f.endswith(".incomplete")]
        self.assertEqual(len(partial), 1, os.listdir(blobs))
        self.assertEqual(os.path.getsize(os.path.join(blobs, partial[0])), CHUNK)
        self.assertFalse(os.path.exists(os.path.join(self.snapshot("acme/flaky"), "model.safetensors")))

        del self.hub.drop_after["model.safetensors"]
        r = self.pull("acme/flaky")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.hub.gets_of("model.safetensors")[before:][-1], f"bytes={CHUNK}-")  # resumed
        with open(os.path.join(r.stdout.strip(), "model.safetensors"), "rb") as f:
            self.assertEqual(f.read(), self.files["model.safetensors"])

    def test_wrong_checksum_is_refused_and_removed(self):
        self.add_repo("acme/corrupt")
        self.hub.corrupt.add("model.safetensors")
        r = self.pull("acme/corrupt")
        self.expect_one_line_error(r, "model.safetensors", "sha256", "removed")
        storage = os.path.join(self.home, "hub", "models--acme--corrupt")
        self.assertFalse(os.path.lexists(os.path.join(self.snapshot("acme/corrupt"), "model.safetensors")))
        self.assertEqual([f for f in os.listdir(os.path.join(storage, "blobs")) if len(f) == 64], [])
        self.hub.corrupt.clear()  # the next run downloads it afresh
        r = self.pull("acme/corrupt")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_unknown_repo(self):
        self.expect_one_line_error(self.pull("acme/no-such-model"), "no model acme/no-such-model")

    def test_unknown_revision(self):
        self.expect_one_line_error(self.pull("acme/tiny-phi", "--revision", "v9"), "no revision 'v9'")

    def test_gated_repo_needs_a_token(self):
        self.add_repo("acme/gated", gated=True)
        self.expect_one_line_error(self.pull("acme/gated"), "gated", "HF_TOKEN")
        r = self.pull("acme/gated", token="hf_test_token")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_not_a_phi_model(self):
        files = dict(self.files)
        config = json.loads(files["config.json"])
        config.update(model_type="llama", architectures=["LlamaForCausalLM"])
        files["config.json"] = json.dumps(config).encode()
        self.add_repo("acme/llama", files=files)
        before = len(self.hub.gets_of("model.safetensors"))
        self.expect_one_line_error(self.pull("acme/llama"), "not a Phi model", "llama")
        self.assertEqual(len(self.hub.gets_of("model.safetensors")), before)  # refused before the weights

    def test_no_safetensors(self):
        files = {k: v for k, v in self.files.items() if k != "model.safetensors"}
        self.add_repo("acme/bin-only", files=files)
        self.expect_one_line_error(self.pull("acme/bin-only"), "no safetensors", "pytorch_model.bin")

    def test_disk_full_is_refused_before_downloading(self):
        self.add_repo("acme/huge", advertised_size={"model.safetensors": 10**16})
        self.expect_one_line_error(self.pull("acme/huge"), "disk full", "HF_HOME")

    def test_no_network_and_the_cache_offline(self):
        dead = f"http://127.0.0.1:{phi_testlib.free_port()}"
        self.expect_one_line_error(self.pull("acme/tiny-phi", endpoint=dead), "cannot reach", dead)
        self.assertEqual(self.pull("acme/tiny-phi").returncode, 0)
        r = self.pull("acme/tiny-phi", endpoint=dead)  # complete in the cache: served from it
        self.assertEqual((r.returncode, r.stdout.strip()), (0, self.snapshot()), r.stderr)
        self.assertIn("cached snapshot", r.stderr)

    def test_disk_full_while_writing_is_one_line(self):
        # ENOSPC cannot be provoked on the test machine's disk; the mapping is checked in-process.
        import errno
        sys.path.insert(0, os.path.dirname(PULL))
        import hub_pull
        line = hub_pull._describe(OSError(errno.ENOSPC, "No space left on device"), "acme/tiny-phi", None,
                                  self.hub.url, "model.safetensors")
        self.assertIn("disk full while writing model.safetensors", line)
        self.assertIn("run again to resume", line)
        self.assertEqual(len(line.splitlines()), 1)

    def test_not_a_model_id(self):
        self.expect_one_line_error(self.pull("../etc"), "not a Hub model id")

    # -----------------------------------------------------------------------------------------

    @unittest.skipUnless(os.environ.get("PHI_WORKER_BIN") and os.environ.get("PHI_PROTO_PYTHON_DIR"),
                         "PHI_WORKER_BIN / PHI_PROTO_PYTHON_DIR not set")
    def test_worker_serves_the_pulled_model_with_its_defaults(self):
        r = self.pull("acme/tiny-phi")
        self.assertEqual(r.returncode, 0, r.stderr)
        phi_testlib.add_proto_path()
        import grpc
        from phi.v1 import common_pb2, worker_pb2, worker_pb2_grpc
        svc = phi_testlib.Service(os.environ["PHI_WORKER_BIN"], [f"--model={r.stdout.strip()}", "--model-name=acme/tiny-phi",
                                                                 "--kv-cache-blocks=64", "--threads=2"], name="hub-worker")
        try:
            svc.wait_healthy()
            with grpc.insecure_channel(svc.address) as ch:
                stub = worker_pb2_grpc.WorkerServiceStub(ch)
                s = stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=10)
                self.assertEqual(s.model, "acme/tiny-phi")
                self.assertEqual(s.generation_defaults.max_new_tokens, GENERATION["max_new_tokens"])
                d = s.generation_defaults.sampling
                self.assertAlmostEqual(d.temperature, GENERATION["temperature"], places=6)
                self.assertAlmostEqual(d.top_p, GENERATION["top_p"], places=6)
                self.assertEqual(d.top_k, GENERATION["top_k"])
                self.assertAlmostEqual(d.repetition_penalty, GENERATION["repetition_penalty"], places=6)
                # stopping.max_new_tokens unset: the file's max_new_tokens.
                req = worker_pb2.GenerateRequest(prompt_ids=[5, 6, 7],
                                                 stopping=common_pb2.StoppingCriteria(ignore_eos=True))
                msgs = list(stub.Generate(req, timeout=60))
                self.assertEqual(msgs[-1].usage.completion_tokens, GENERATION["max_new_tokens"])
                self.assertEqual(msgs[-1].finish_reason, common_pb2.FINISH_REASON_LENGTH)
        finally:
            svc.kill()

    @unittest.skipUnless(all(os.environ.get(k) for k in ("PHI_WORKER_BIN", "PHI_TOKENIZER_BIN", "PHI_GATEWAY_BIN",
                                                         "PHI_PROTO_PYTHON_DIR")), "the three binaries are not set")
    def test_phi_up_with_a_model_id(self):
        bins = tempfile.mkdtemp(prefix="bins-", dir=self.tmp)
        for k in ("PHI_WORKER_BIN", "PHI_TOKENIZER_BIN", "PHI_GATEWAY_BIN"):
            os.symlink(os.environ[k], os.path.join(bins, os.path.basename(os.environ[k])))
        env = self.env()
        env["PHI_PROTO_PYTHON_DIR"] = os.environ["PHI_PROTO_PYTHON_DIR"]
        r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "phi_cli", "phi_cli.py"), "up",
                            "--model", "acme/tiny-phi", "--ephemeral-ports", "--exit-after-demo", "--demo-tokens", "4",
                            "--worker-threads", "2", "--build-dir", bins, "--log-dir", os.path.join(self.home, "logs"),
                            "--startup-timeout", "120"], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("getting it from the Hugging Face Hub", r.stdout)
        self.assertIn(f"model {self.snapshot()}", r.stdout)
        self.assertRegex(r.stdout, r"\[[1-4] tokens, first after")
        r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "phi_cli", "phi_cli.py"), "up",
                            "--model", "acme/no-such-model", "--build-dir", bins], env=env, capture_output=True,
                           text=True, timeout=120)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no model acme/no-such-model", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
