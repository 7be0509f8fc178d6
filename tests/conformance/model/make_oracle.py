#!/usr/bin/env python3
"""Golden data for the CPU backend from Hugging Face transformers' PhiForCausalLM.

For each of several tiny random Phi shapes (head counts, head dims, partial_rotary_factor 0.5,
0.4 and 1.0, odd intermediate sizes, vocabularies not a multiple of 64, and padded vocabularies:
more output rows than tokenizer ids, like Phi-1.5's 51,200 rows for 50,295 ids) this writes
  <out>/<name>/config.json, model.safetensors (or shards + model.safetensors.index.json)
                            via save_pretrained(safe_serialization=True)
  <out>/<name>/golden.safetensors   for each prompt i:
      prompt<i>.ids     I32 [L]       the prompt
      prompt<i>.logits  F32 [L, V]    logits at every prompt position (fp32 model)
      prompt<i>.greedy  I32 [64]      64-token greedy (argmax) continuation
      prompt<i>.greedy_logprobs F32 [64], .greedy_top_ids I32 [64, 5], .greedy_top_logprobs F32 [64, 5]
                                    log_softmax(logits, -1) over all rows at each greedy token,
                                    and its 5 largest (torch.topk), as transformers scores them
      prompt<i>.prompt_logprobs F32 [L-1], .prompt_top_ids I32 [L-1, 5], .prompt_top_logprobs
                                    the same for each prompt token after the first
      prompt<i>.int8_logits, prompt<i>.int8_greedy, prompt<i>.int8_greedy_logprobs, ...
                                    the same from the model whose linear layers hold their
                                    INT8-dequantized weights (quantize_int8)
Every parameter, biases and LayerNorms included, is drawn at random (never the default zeros
and ones, which would leave bias and LayerNorm code untested).

Usage: make_oracle.py --out DIR   (skips the work when DIR holds output of this same script)
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys


def ensure_deps():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError:
        # Test set-up installs what it needs: the pinned oracle packages into this interpreter.
        req = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "deps", "requirements.txt")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", req], check=True)


SHAPES = [
    # name, hidden, heads, intermediate, layers, vocab, partial_rotary_factor, max_pos, prompt lengths
    dict(name="h64_a4_r05_long", hidden=64, heads=4, inter=256, layers=2, vocab=1000, prf=0.5, max_pos=1100,
         prompts=[1, 9, 1000], shards=None),
    dict(name="h96_a3_r10_odd", hidden=96, heads=3, inter=101, layers=3, vocab=777, prf=1.0, max_pos=256,
         prompts=[5, 17, 40], shards="60KB"),
    dict(name="h160_a8_r04", hidden=160, heads=8, inter=333, layers=2, vocab=515, prf=0.4, max_pos=512,
         prompts=[2, 31, 100], shards=None),
    # A folder written by tools/make_model.py (BF16 file, trained tokenizer), loaded by transformers
    # in float32: checks the tool's output and BF16 checkpoint reading end to end.
    dict(name="make_model_bf16", hidden=64, heads=4, inter=200, layers=2, vocab=None, prf=0.5, max_pos=2048,
         prompts=[3, 50], shards=None, make_model=True),
    # Padded vocabulary: 1088 output rows for a tokenizer of 1000 trained + added ids (Phi-1.5:
    # 51,200 rows, 50,295 ids). The padding rows are as random as the others, so greedy picks
    # padding ids and they fill top-k lists: logprobs must be log_softmax over all 1088 rows.
    dict(name="padded_vocab_bf16", hidden=64, heads=4, inter=128, layers=2, vocab=1088, prf=0.5, max_pos=2048,
         prompts=[2, 77], shards=None, make_model=True, tokenizer_vocab=1000),
]
GREEDY_TOKENS = 64
TOP_LOGPROBS = 5  # top alternatives recorded per position
INT8_K_BLOCK = 1024  # the CPU backend's K block: one scale per output feature and block


def quantize_rows_int8(w):
    """w [N, K] float32 -> the dequantized weights of the CPU backend's INT8 format:
    per row and block of INT8_K_BLOCK columns, scale = max|w| / 127 (float32),
    q = round-half-even(w / scale), w' = q * scale (services/worker/backends/cpu/matmul.h)."""
    import torch
    out = torch.empty_like(w)
    for k0 in range(0, w.shape[1], INT8_K_BLOCK):
        blk = w[:, k0:k0 + INT8_K_BLOCK]
        scale = blk.abs().amax(dim=1, keepdim=True) / 127.0
        q = torch.where(scale > 0, torch.round(blk / scale), torch.zeros_like(blk)).clamp(-127, 127)
        out[:, k0:k0 + INT8_K_BLOCK] = q * scale
    return out


def quantize_int8(model):
    """A copy of `model` with the CPU backend's INT8 weights, dequantized: q, k, v, fc1 and
    lm_head row by row; dense | fc2 as the one fused matrix the backend quantizes (a block
    of columns may span both); the embedding table rounded to BF16, as the backend keeps it."""
    import copy
    import torch
    q = copy.deepcopy(model)
    with torch.no_grad():
        for layer in q.model.layers:
            a = layer.self_attn
            for lin in (a.q_proj, a.k_proj, a.v_proj, layer.mlp.fc1):
                lin.weight.copy_(quantize_rows_int8(lin.weight.float()))
            h = a.dense.weight.shape[1]
            fused = quantize_rows_int8(torch.cat([a.dense.weight, layer.mlp.fc2.weight], dim=1).float())
            a.dense.weight.copy_(fused[:, :h])
            layer.mlp.fc2.weight.copy_(fused[:, h:])
        q.lm_head.weight.copy_(quantize_rows_int8(q.lm_head.weight.float()))
        emb = q.model.embed_tokens.weight
        emb.copy_(emb.to(torch.bfloat16).float())
    return q


def build(shape, out_dir, seed):
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    if shape.get("make_model"):
        tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools", "make_model.py")
        subprocess.run([sys.executable, tool, "--out", out_dir, "--preset", "tiny", "--dtype", "bf16",
                        "--seed", str(seed), "--std", "0.1", "--hidden-size", str(shape["hidden"]),
                        "--num-heads", str(shape["heads"]), "--intermediate-size", str(shape["inter"]),
                        "--num-layers", str(shape["layers"]),
                        "--tokenizer-vocab-size", str(shape.get("tokenizer_vocab", 512)),
                        *(["--vocab-size", str(shape["vocab"])] if shape["vocab"] else [])], check=True)
        model = PhiForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
        with open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        prompt_vocab = 1 + max([*tok["model"]["vocab"].values(), *(t["id"] for t in tok["added_tokens"])])
        return record(model, shape, out_dir, seed, prompt_vocab)

    torch.manual_seed(seed)
    config = PhiConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["inter"],
                       num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                       partial_rotary_factor=shape["prf"], max_position_embeddings=shape["max_pos"],
                       hidden_act="gelu_new", bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
                       attn_implementation="eager")
    model = PhiForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    kwargs = dict(safe_serialization=True)
    if shape["shards"]:
        kwargs["max_shard_size"] = shape["shards"]
    model.save_pretrained(out_dir, **kwargs)
    return record(model, shape, out_dir, seed, shape["vocab"])


def greedy(model, ids):
    """64 greedy tokens with transformers' own KV cache, one token per forward (argmax over
    every output row, as generate(do_sample=False) picks); the log_softmax over all rows at each
    token and its TOP_LOGPROBS largest; and the smallest gap between the top two logits."""
    import torch
    res = model(ids, use_cache=True)
    past, last = res.past_key_values, res.logits[0, -1]
    out, lps, top_ids, top_lps, gap = [], [], [], [], float("inf")
    for _ in range(GREEDY_TOKENS):
        top2 = torch.topk(last, 2).values
        gap = min(gap, float(top2[0] - top2[1]))
        nxt = int(torch.argmax(last))
        out.append(nxt)
        lp = torch.log_softmax(last, -1)
        lps.append(float(lp[nxt]))
        t = torch.topk(lp, TOP_LOGPROBS)
        top_ids.append(t.indices.tolist())
        top_lps.append(t.values.tolist())
        res = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past, last = res.past_key_values, res.logits[0, -1]
    return out, gap, (lps, top_ids, top_lps)


def prompt_scores(logits, ids):
    """transformers' prompt scoring: log_softmax(logits, -1) over all rows at each next prompt
    token (what lm-eval's hf backend sums), and the TOP_LOGPROBS largest per position."""
    import torch
    lp = torch.log_softmax(logits[:-1], -1)
    tok = lp.gather(1, ids[1:].unsqueeze(1))[:, 0]
    t = torch.topk(lp, TOP_LOGPROBS, dim=-1)
    return tok, t.indices, t.values


def record(model, shape, out_dir, seed, prompt_vocab):
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    gen = torch.Generator().manual_seed(seed + 1)
    golden, gaps = {}, {}
    int8 = quantize_int8(model)
    with torch.no_grad():
        for i, length in enumerate(shape["prompts"]):
            ids = torch.randint(0, prompt_vocab, (1, length), generator=gen)
            golden[f"prompt{i}.ids"] = ids[0].numpy().astype(np.int32)
            for pre, m in (("", model), ("int8_", int8)):
                logits = m(ids).logits[0]
                golden[f"prompt{i}.{pre}logits"] = logits.numpy().astype(np.float32)
                out, gap, (lps, top_ids, top_lps) = greedy(m, ids)
                golden[f"prompt{i}.{pre}greedy"] = np.array(out, dtype=np.int32)
                golden[f"prompt{i}.{pre}greedy_logprobs"] = np.array(lps, dtype=np.float32)
                golden[f"prompt{i}.{pre}greedy_top_ids"] = np.array(top_ids, dtype=np.int32)
                golden[f"prompt{i}.{pre}greedy_top_logprobs"] = np.array(top_lps, dtype=np.float32)
                gaps[f"prompt{i}.{pre}min_top2_gap"] = f"{gap:.6g}"
                gaps[f"prompt{i}.{pre}greedy_padding_ids"] = str(sum(t >= prompt_vocab for t in out))
                if length > 1:
                    tok, tids, tlps = prompt_scores(logits, ids[0])
                    golden[f"prompt{i}.{pre}prompt_logprobs"] = tok.numpy().astype(np.float32)
                    golden[f"prompt{i}.{pre}prompt_top_ids"] = tids.numpy().astype(np.int32)
                    golden[f"prompt{i}.{pre}prompt_top_logprobs"] = tlps.numpy().astype(np.float32)
    gaps["tokenizer_vocab_size"] = str(prompt_vocab)
    save_file(golden, os.path.join(out_dir, "golden.safetensors"), metadata=gaps)
    return gaps


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    with open(__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(args.out, "stamp.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f).get("sha256") == digest:
                print(f"{args.out}: up to date")
                return
    ensure_deps()
    import torch
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    names = []
    for k, shape in enumerate(SHAPES):
        d = os.path.join(args.out, shape["name"])
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        gaps = build(shape, d, seed=1234 + k)
        names.append(shape["name"])
        print(f"{d}: {gaps}")
    with open(stamp, "w") as f:
        json.dump({"sha256": digest, "models": names}, f)


if __name__ == "__main__":
    main()
