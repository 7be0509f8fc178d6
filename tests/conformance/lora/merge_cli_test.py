#!/usr/bin/env python3
"""`phi merge-lora` (tools/phi_cli -> phi-merge-lora) against peft's merge_and_unload, from Python.

For every adapter make_lora_oracle.py recorded: the merged folder holds the base's weight files
(the same shards and index), every adapted weight equal to peft's merged one within one rounding
step of the checkpoint's dtype, every other tensor byte for byte the base's, and the base's
config, generation config and tokenizer files; an adapter made for another base is refused with
exit status 1, "base model mismatch" on stderr and no output folder.

Usage: merge_cli_test.py --oracle DIR --build-dir DIR
"""

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
ARGS = None


def merge(base, adapter, out):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "phi_cli", "phi_cli.py"), "merge-lora",
                           "--build-dir", ARGS.build_dir, "--base", base, "--adapter", adapter, "--out", out],
                          capture_output=True, text=True, timeout=300)


def tensors(folder):
    """name -> (file name, tensor) over every .safetensors file of a model folder."""
    from safetensors import safe_open
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors") and f != "golden.safetensors":
            with safe_open(os.path.join(folder, f), "pt") as st:
                for k in st.keys():
                    out[k] = (f, st.get_tensor(k))
    return out


class MergeCliTest(unittest.TestCase):
    def test_merged_weights_equal_peft_merge_and_unload(self):
        import torch
        with open(os.path.join(ARGS.oracle, "stamp.json")) as f:
            models = json.load(f)["models"]
        for model, adapters in models.items():
            base_dir = os.path.join(ARGS.oracle, model)
            base = tensors(base_dir)
            for adapter in adapters:
                with self.subTest(model=model, adapter=adapter), tempfile.TemporaryDirectory() as tmp:
                    adapter_dir = os.path.join(base_dir, "adapters", adapter)
                    out = os.path.join(tmp, "merged")
                    r = merge(base_dir, adapter_dir, out)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    merged = tensors(out)
                    self.assertEqual(sorted(merged), sorted(base))
                    from safetensors.torch import load_file
                    peft = load_file(os.path.join(adapter_dir, "peft_merged.safetensors"))
                    for name, (file, t) in merged.items():
                        self.assertEqual(file, base[name][0], name)  # the same shard
                        self.assertEqual(t.dtype, base[name][1].dtype, name)
                        if name not in peft:
                            self.assertTrue(torch.equal(t, base[name][1]), f"{name} changed but is not adapted")
                            continue
                        want = peft[name]
                        diff = (t.float() - want.float()).abs()
                        # F32: summation order; F16/BF16: one rounding step of the element.
                        allowed = 1e-5 * want.float().abs().max()
                        if t.dtype != torch.float32:
                            allowed = allowed + want.float().abs() / 128
                        self.assertTrue(bool((diff <= allowed).all()), f"{name}: max diff {float(diff.max()):.3g}")
                        self.assertFalse(torch.equal(t, base[name][1]), f"{name}: the adapter changed nothing")
                    for f in os.listdir(base_dir):
                        if os.path.isfile(os.path.join(base_dir, f)) and f.endswith((".json", ".txt")):
                            self.assertTrue(filecmp.cmp(os.path.join(base_dir, f), os.path.join(out, f), shallow=False), f)

    def test_refuses_an_adapter_of_another_base(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "merged")
            r = merge(os.path.join(ARGS.oracle, "h96_a6_sharded"),
                      os.path.join(ARGS.oracle, "h64_a4", "adapters", "r1_all_f32"), out)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("base model mismatch", r.stderr)
            self.assertFalse(os.path.exists(out))
            self.assertEqual(os.listdir(tmp), [], "a partial folder was left behind")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--oracle", required=True)
    p.add_argument("--build-dir", required=True)
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
