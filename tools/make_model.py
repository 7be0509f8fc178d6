#!/usr/bin/env python3
"""Write a complete Phi (PhiForCausalLM) model folder with seeded random weights.

The build machines cannot download Phi-1.5, so tests, demos and benchmarks run on models made
here: any Phi shape, from tiny ones for tests to the real Phi-1.5 shape (1.4B parameters) for
benchmarks. The folder is what Hugging Face publishes and `transformers` loads:
  config.json             model_type phi, architectures [PhiForCausalLM], every PhiConfig field
  generation_config.json  bos/eos ids (eos: <|im_end|> and <|endoftext|>)
  model.safetensors       F32, F16 or BF16; weights and biases ~ normal(0, std), LayerNorm
                          weights 1 + normal(0, std) (never zeros: a zero bias tests nothing)
  tokenizer files         from tools/make_tokenizer.py: Phi-1.5 Instruct's real tokenizer (GPT-2 BPE,
                          CodeGen whitespace tokens, ChatML; 50,297 ids) for --preset phi-1_5, a small
                          trained one with the same layout for tiny models (--tokenizer to choose)

Weights are generated and written one chunk at a time, so a 1.4B model needs ~100 MB of RAM,
not three copies of the weights. Each tensor draws from its own stream, numpy
PCG64(SeedSequence([seed, tensor_index])), so the output depends only on the flags.

Usage:
  make_model.py --out DIR --preset tiny|phi-1_5 [--dtype f32|f16|bf16] [--seed N] [--tokenizer gpt2|trained]
  make_model.py --out DIR --hidden-size 128 --num-layers 2 --num-heads 4 ...   (overrides a preset)
"""

import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np

PRESETS = {
    # A model that runs in milliseconds: tests (a trained 2k tokenizer; `./phi up`'s demo uses this
    # shape with --tokenizer gpt2 --vocab-size 51200).
    "tiny": dict(hidden_size=128, intermediate_size=512, num_layers=2, num_heads=4,
                 max_position_embeddings=2048, partial_rotary_factor=0.5, tokenizer="trained",
                 tokenizer_vocab_size=2048, vocab_size=None),
    # rasyosef/Phi-1_5-Instruct-v0.1 / microsoft/phi-1_5 shape and tokenizer: 51,200 output rows for
    # 50,297 tokenizer ids (a padded vocabulary).
    "phi-1_5": dict(hidden_size=2048, intermediate_size=8192, num_layers=24, num_heads=32,
                    max_position_embeddings=2048, partial_rotary_factor=0.5, tokenizer="gpt2",
                    tokenizer_vocab_size=None, vocab_size=51200),
}

DTYPES = {"f32": ("F32", "float32", 4), "f16": ("F16", "float16", 2), "bf16": ("BF16", "bfloat16", 2)}
CHUNK = 1 << 22  # elements generated at a time


def tensor_specs(c):
    """(name, shape, kind) in checkpoint order; kind is 'w' (normal), 'ln' (1 + normal)."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    specs = [("model.embed_tokens.weight", (v, h), "w")]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        specs += [(p + "input_layernorm.weight", (h,), "ln"), (p + "input_layernorm.bias", (h,), "w")]
        for proj in ("q_proj", "k_proj", "v_proj", "dense"):
            specs += [(p + f"self_attn.{proj}.weight", (h, h), "w"), (p + f"self_attn.{proj}.bias", (h,), "w")]
        specs += [(p + "mlp.fc1.weight", (i, h), "w"), (p + "mlp.fc1.bias", (i,), "w"),
                  (p + "mlp.fc2.weight", (h, i), "w"), (p + "mlp.fc2.bias", (h,), "w")]
    specs += [("model.final_layernorm.weight", (h,), "ln"), ("model.final_layernorm.bias", (h,), "w"),
              ("lm_head.weight", (v, h), "w"), ("lm_head.bias", (v,), "w")]
    return specs


def to_dtype_bytes(x, dtype):
    if dtype == "f32":
        return x.astype("<f4").tobytes()
    if dtype == "f16":
        return x.astype("<f2").tobytes()
    # bf16: round to nearest even on the float32 bits (as torch does).
    u = x.astype("<f4").view("<u4").astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2").tobytes()


def write_safetensors(path, specs, dtype, seed, std):
    st_dtype, _, size = DTYPES[dtype]
    header, offset = {}, 0
    for name, shape, _ in specs:
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt", "generator": "phi-serve tools/make_model.py", "seed": str(seed)}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data section 8-byte aligned, as the reference writer does
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for index, (name, shape, kind) in enumerate(specs):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
            remaining = int(np.prod(shape))
            while remaining:
                n = min(remaining, CHUNK)
                x = rng.standard_normal(n, dtype=np.float32) * np.float32(std)
                if kind == "ln":
                    x += np.float32(1.0)
                f.write(to_dtype_bytes(x, dtype))
                remaining -= n
    os.replace(tmp, path)
    return offset


def token_id(tokenizer_json, content):
    for t in tokenizer_json.get("added_tokens", []):
        if t["content"] == content:
            return t["id"]
    return tokenizer_json["model"]["vocab"].get(content)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="model folder to write (created)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--std", type=float, default=0.02, help="weight standard deviation (default 0.02)")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--intermediate-size", type=int)
    p.add_argument("--num-layers", type=int)
    p.add_argument("--num-heads", type=int)
    p.add_argument("--max-position-embeddings", type=int)
    p.add_argument("--partial-rotary-factor", type=float)
    p.add_argument("--vocab-size", type=int,
                   help="embedding / lm_head rows (default: the preset's, or the tokenizer's size rounded up to 64)")
    p.add_argument("--tokenizer", choices=("gpt2", "trained"),
                   help="gpt2: Phi-1.5 Instruct's real tokenizer (make_tokenizer.py --gpt2); trained: a small "
                        "trained one (default: the preset's; phi-1_5 gpt2, tiny trained)")
    p.add_argument("--tokenizer-vocab-size", type=int,
                   help="BPE model size of a trained tokenizer (implies --tokenizer trained)")
    p.add_argument("--tokenizer-from", help="copy the tokenizer files from this folder instead of training one")
    args = p.parse_args(argv)

    c = dict(PRESETS[args.preset])
    for key, flag in [("hidden_size", args.hidden_size), ("intermediate_size", args.intermediate_size),
                      ("num_layers", args.num_layers), ("num_heads", args.num_heads),
                      ("max_position_embeddings", args.max_position_embeddings),
                      ("partial_rotary_factor", args.partial_rotary_factor), ("vocab_size", args.vocab_size),
                      ("tokenizer_vocab_size", args.tokenizer_vocab_size), ("tokenizer", args.tokenizer)]:
        if flag is not None:
            c[key] = flag
    if args.tokenizer_vocab_size is not None:
        if args.tokenizer == "gpt2":
            p.error("--tokenizer-vocab-size applies to a trained tokenizer, not --tokenizer gpt2")
        c["tokenizer"] = "trained"
    if c["tokenizer"] == "trained" and c["tokenizer_vocab_size"] is None:
        c["tokenizer_vocab_size"] = 2048
    if c["hidden_size"] % c["num_heads"]:
        p.error(f"--hidden-size {c['hidden_size']} is not a multiple of --num-heads {c['num_heads']}")
    head_dim = c["hidden_size"] // c["num_heads"]
    rotary = int(c["partial_rotary_factor"] * head_dim)
    if rotary < 2 or rotary % 2:
        p.error(f"partial_rotary_factor {c['partial_rotary_factor']} gives rotary dim {rotary}; need even >= 2")

    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    if args.tokenizer_from:
        import shutil
        for name in ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json",
                     "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(args.tokenizer_from, name), os.path.join(args.out, name))
    else:
        what = ["--gpt2"] if c["tokenizer"] == "gpt2" else ["--vocab-size", str(c["tokenizer_vocab_size"])]
        subprocess.run([sys.executable, os.path.join(here, "make_tokenizer.py"), "--out", args.out, *what],
                       check=True)
    with open(os.path.join(args.out, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    tok_size = max([*tok["model"]["vocab"].values(), *(t["id"] for t in tok.get("added_tokens", []))]) + 1
    vocab_rows = c["vocab_size"] or (tok_size + 63) // 64 * 64
    if vocab_rows < tok_size:
        p.error(f"--vocab-size {vocab_rows} is smaller than the tokenizer's {tok_size} ids")
    eot, im_end = token_id(tok, "<|endoftext|>"), token_id(tok, "<|im_end|>")
    eos = [i for i in (im_end, eot) if i is not None]

    st_dtype, torch_dtype, _ = DTYPES[args.dtype]
    config = {
        "_name_or_path": f"phi-serve/random-{args.preset}",
        "architectures": ["PhiForCausalLM"],
        "model_type": "phi",
        "attention_dropout": 0.0,
        "bos_token_id": eot,
        "embd_pdrop": 0.0,
        "eos_token_id": eos[0] if len(eos) == 1 else eos,
        "hidden_act": "gelu_new",
        "hidden_size": c["hidden_size"],
        "initializer_range": args.std,
        "intermediate_size": c["intermediate_size"],
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": c["max_position_embeddings"],
        "num_attention_heads": c["num_heads"],
        "num_hidden_layers": c["num_layers"],
        "num_key_value_heads": c["num_heads"],
        "partial_rotary_factor": c["partial_rotary_factor"],
        "qk_layernorm": False,
        "resid_pdrop": 0.0,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.44.2",
        "use_cache": True,
        "vocab_size": vocab_rows,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    generation = {"bos_token_id": eot, "eos_token_id": eos, "pad_token_id": eot,
                  "transformers_version": "4.44.2"}
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)

    specs = tensor_specs({"hidden_size": c["hidden_size"], "intermediate_size": c["intermediate_size"],
                          "vocab_size": vocab_rows, "num_hidden_layers": c["num_layers"]})
    nbytes = write_safetensors(os.path.join(args.out, "model.safetensors"), specs, args.dtype, args.seed, args.std)
    params = sum(int(np.prod(s)) for _, s, _ in specs)
    print(f"wrote {args.out}: {params / 1e6:.1f}M parameters, {st_dtype}, {nbytes / 1e6:.1f} MB of weights, "
          f"vocab rows {vocab_rows} (tokenizer {tok_size})", file=sys.stderr)


if __name__ == "__main__":
    main()
