#!/usr/bin/env python3
"""The equality test's model: tools/make_model.py's tiny Phi (f32, 2,048 positions) with PADDED output rows.

  make_padded_model.py --out DIR [--vocab-size 2560]

The tokenizer has ~2,050 ids; the embedding and lm_head get --vocab-size rows (512 padding rows by
default), as Phi-1.5 has 51,200 rows for ~50,297 tokenizer ids. In a trained model the padding rows
are never targets, so their logits sit well below the others and greedy decoding never picks them,
but they still carry probability mass: log-softmax over all rows (what transformers and lm-eval's
`hf` backend compute) differs from one over the tokenizer's ids. The random model is made to look
like that: the padding rows' lm_head bias gets -PAD_BIAS. With 512 rows at -4 the padding holds
~0.5% of the mass (each logprob moves by ~4.5e-3 if it is left out: visible at the test's 1e-3),
and a padding row is never the argmax (it would need a ~20 sigma logit).
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

PAD_BIAS = 4.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--vocab-size", type=int, default=2560)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--dtype", default="f32")
    a = p.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    subprocess.run([sys.executable, os.path.join(root, "tools", "make_model.py"), "--out", a.out, "--preset", a.preset,
                    "--dtype", a.dtype, "--vocab-size", str(a.vocab_size), "--max-position-embeddings", "2048"],
                   check=True)
    with open(os.path.join(a.out, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    tok_size = max([*tok["model"]["vocab"].values(), *(t["id"] for t in tok.get("added_tokens", []))]) + 1
    path = os.path.join(a.out, "model.safetensors")
    w = load_file(path)
    bias = w["lm_head.bias"]
    assert bias.shape[0] == a.vocab_size > tok_size, (bias.shape, tok_size)
    bias[tok_size:] -= PAD_BIAS
    save_file({k: v.contiguous() for k, v in w.items()}, path, metadata={"format": "pt"})
    print(f"{a.out}: {a.vocab_size} output rows, tokenizer {tok_size} ids, padding bias -{PAD_BIAS}", file=sys.stderr)


if __name__ == "__main__":
    main()
