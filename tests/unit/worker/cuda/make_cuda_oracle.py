#!/usr/bin/env python3
"""Golden data for the CUDA backend: tiny random PhiForCausalLM models with head_dim 64.

The CUDA kernels are specialised for head_dim 64 (Phi-1.5's), so the shapes of
tests/conformance/model/make_oracle.py (head_dim 16-32) are refused by CudaModelRunner. This
script reuses that script's build()/record() (same random parameters, same golden layout:
config.json, safetensors, golden.safetensors with prompt<i>.ids/.logits/.greedy) with
head_dim-64 shapes: partial rotary 0.5 and 1.0, an odd intermediate size and vocabulary, a
sharded checkpoint, a 1-token prompt and prompts that end inside a KV block.

Usage: make_cuda_oracle.py --out DIR   (skips the work when DIR holds output of this same
script and make_oracle.py)
"""

import argparse
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.path.join(HERE, "..", "..", "..", "conformance", "model")
sys.path.insert(0, ORACLE)
import make_oracle  # noqa: E402

SHAPES = [
    dict(name="hd64_a2_r05", hidden=128, heads=2, inter=344, layers=2, vocab=1000, prf=0.5, max_pos=512,
         prompts=[1, 17, 300], shards=None),
    dict(name="hd64_a3_r10_odd_sharded", hidden=192, heads=3, inter=333, layers=3, vocab=777, prf=1.0,
         max_pos=256, prompts=[5, 40, 130], shards="150KB"),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    h = hashlib.sha256()
    for f in (__file__, make_oracle.__file__):
        with open(f, "rb") as fh:
            h.update(fh.read())
    digest = h.hexdigest()
    stamp = os.path.join(args.out, "stamp.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f).get("sha256") == digest:
                print(f"{args.out}: up to date")
                return
    make_oracle.ensure_deps()
    import torch
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    names = []
    for k, shape in enumerate(SHAPES):
        d = os.path.join(args.out, shape["name"])
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        gaps = make_oracle.build(shape, d, seed=4321 + k)
        names.append(shape["name"])
        print(f"{d}: {gaps}")
    with open(stamp, "w") as f:
        json.dump({"sha256": digest, "models": names}, f)


if __name__ == "__main__":
    main()
