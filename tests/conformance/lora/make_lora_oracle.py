#!/usr/bin/env python3
"""Golden data for LoRA adapters from peft's PeftModel on transformers' PhiForCausalLM.

For each of a few tiny random Phi models (one F32 file; F32 shards; BF16 and F16 files written
by tools/make_model.py) and several random adapters made by tools/make_lora.py (ranks 1, 8, 64;
all six modules, attention only, MLP only; use_rslora on and off; F32, F16 and BF16 tensors),
this writes
  <out>/<model>/config.json, model.safetensors (or shards + index), tokenizer files if any
  <out>/<model>/adapters/<adapter>/adapter_config.json, adapter_model.safetensors
  <out>/<model>/adapters/<adapter>/golden.safetensors   for each prompt i:
      prompt<i>.ids     I32 [L]      the prompt (the same for every adapter of a model)
      prompt<i>.logits  F32 [L, V]   PeftModel's logits at every prompt position (F32 model)
      prompt<i>.greedy  I32 [64]     its 64-token greedy (argmax) continuation
    metadata: prompt<i>.min_top2_gap, and prompt<i>.rel_change_vs_base (how far the adapter
    moves the base's logits: a test that the adapter is applied can fail)
  <out>/<model>/adapters/<adapter>/peft_merged.safetensors
      the weight of every adapted linear layer after peft's merge_and_unload, with the model
      loaded in its checkpoint's dtype (what `phi-merge-lora` must reproduce)
PeftModel is loaded from the saved adapter folder (PeftModel.from_pretrained), as a user's
adapter would be: F16/BF16 tensors take part rounded, as the C++ loader reads them.

Usage: make_lora_oracle.py --out DIR   (skips the work when DIR holds output of this same script
and of the tools it runs)
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
MAKE_MODEL = os.path.join(REPO, "tools", "make_model.py")
MAKE_LORA = os.path.join(REPO, "tools", "make_lora.py")

# Heads, intermediate sizes and vocabularies split evenly in two: every model serves as a
# tensor-parallel group of N = 2 too.
MODELS = [
    dict(name="h64_a4", hidden=64, heads=4, inter=256, layers=2, vocab=1000, prf=0.5, max_pos=256,
         prompts=[1, 9, 40], shards=None),
    dict(name="h96_a6_sharded", hidden=96, heads=6, inter=202, layers=3, vocab=778, prf=0.4, max_pos=256,
         prompts=[5, 31], shards="60KB"),
    # tools/make_model.py's BF16 and F16 folders: merging must write their dtype again.
    dict(name="make_model_bf16", hidden=64, heads=4, inter=200, layers=2, vocab=None, prf=0.5, max_pos=2048,
         prompts=[3, 25], shards=None, make_model="bf16"),
    dict(name="make_model_f16", hidden=64, heads=4, inter=128, layers=2, vocab=None, prf=0.5, max_pos=2048,
         prompts=[7], shards=None, make_model="f16"),
]
# name: (rank, lora_alpha, targets, use_rslora, dtype of the saved tensors)
ADAPTERS = {
    "r1_all_f32": (1, 2, "all", False, "f32"),
    "r8_attention_bf16_rslora": (8, 8, "attention", True, "bf16"),
    "r64_mlp_f16": (64, 64, "mlp", False, "f16"),
    "r8_all_f16_rslora": (8, 4, "all", True, "f16"),
}
MODEL_ADAPTERS = {
    "h64_a4": list(ADAPTERS),
    "h96_a6_sharded": ["r1_all_f32", "r8_attention_bf16_rslora", "r64_mlp_f16"],
    "make_model_bf16": ["r8_all_f16_rslora", "r64_mlp_f16"],
    "make_model_f16": ["r8_attention_bf16_rslora"],
}
GREEDY_TOKENS = 64
MODULE_PATHS = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
                "dense": "self_attn.dense", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def ensure_deps():
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        # Test set-up installs what it needs, as ./phi does (tools/deps).
        deps = os.path.join(REPO, "tools", "deps")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(deps, "requirements.txt")],
                       check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--require-hashes", "-r",
                        os.path.join(deps, "requirements-nodeps.txt")], check=True)


def build_base(shape, out_dir, seed):
    """Writes the base model folder; returns the ids prompts may use."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    if shape.get("make_model"):
        subprocess.run([sys.executable, MAKE_MODEL, "--out", out_dir, "--preset", "tiny", "--dtype", shape["make_model"],
                        "--seed", str(seed), "--std", "0.1", "--hidden-size", str(shape["hidden"]),
                        "--num-heads", str(shape["heads"]), "--intermediate-size", str(shape["inter"]),
                        "--num-layers", str(shape["layers"]), "--tokenizer-vocab-size", "512"], check=True)
        with open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        return 1 + max([*tok["model"]["vocab"].values(), *(t["id"] for t in tok["added_tokens"])])
    torch.manual_seed(seed)
    config = PhiConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["inter"],
                       num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                       partial_rotary_factor=shape["prf"], max_position_embeddings=shape["max_pos"],
                       hidden_act="gelu_new", bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    model = PhiForCausalLM(config).eval()
    with torch.no_grad():  # every parameter random, LayerNorms and biases too (make_oracle.py)
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
    return shape["vocab"]


def load_base(model_dir, dtype):
    import torch
    from transformers import PhiForCausalLM
    return PhiForCausalLM.from_pretrained(model_dir, torch_dtype=dtype, attn_implementation="eager").eval()


def greedy(model, ids):
    """GREEDY_TOKENS argmax tokens with the model's KV cache, one token per forward; and the
    smallest gap between the top two logits on the way."""
    import torch
    res = model(input_ids=ids, use_cache=True)
    past, last = res.past_key_values, res.logits[0, -1]
    out, gap = [], float("inf")
    for _ in range(GREEDY_TOKENS):
        top2 = torch.topk(last, 2).values
        gap = min(gap, float(top2[0] - top2[1]))
        nxt = int(torch.argmax(last))
        out.append(nxt)
        res = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past, last = res.past_key_values, res.logits[0, -1]
    return out, gap


def rel(a, b):
    return float((a - b).norm() / b.norm())


def record_adapter(model_dir, adapter_dir, prompts, base_logits, checkpoint_dtype):
    import numpy as np
    import torch
    from peft import PeftModel
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    golden, meta = {}, {}
    model = PeftModel.from_pretrained(load_base(model_dir, torch.float32), adapter_dir).eval()
    with torch.no_grad():
        for i, ids in enumerate(prompts):
            logits = model(input_ids=ids).logits[0]
            golden[f"prompt{i}.ids"] = ids[0].numpy().astype(np.int32)
            golden[f"prompt{i}.logits"] = logits.numpy().astype(np.float32)
            out, gap = greedy(model, ids)
            golden[f"prompt{i}.greedy"] = np.array(out, dtype=np.int32)
            meta[f"prompt{i}.min_top2_gap"] = f"{gap:.6g}"
            meta[f"prompt{i}.rel_change_vs_base"] = f"{rel(logits, base_logits[i]):.6g}"
    save_file(golden, os.path.join(adapter_dir, "golden.safetensors"), metadata=meta)

    # peft's merge in the checkpoint's own dtype: W += scaling * B A for every adapted layer.
    merged = PeftModel.from_pretrained(load_base(model_dir, checkpoint_dtype), adapter_dir).merge_and_unload()
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
        targets = json.load(f)["target_modules"]
    weights = {}
    for l, layer in enumerate(merged.model.layers):
        for t in targets:
            path = MODULE_PATHS[t]
            weights[f"model.layers.{l}.{path}.weight"] = layer.get_submodule(path).weight.detach().contiguous()
    save_torch(weights, os.path.join(adapter_dir, "peft_merged.safetensors"))
    return meta


def build(shape, out_dir, seed):
    import torch
    vocab = build_base(shape, out_dir, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    prompts = [torch.randint(0, vocab, (1, n), generator=gen) for n in shape["prompts"]]
    base = load_base(out_dir, torch.float32)
    with torch.no_grad():
        base_logits = [base(input_ids=ids).logits[0] for ids in prompts]
    checkpoint_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(shape.get("make_model"), torch.float32)
    report = {}
    for k, name in enumerate(MODEL_ADAPTERS[shape["name"]]):
        rank, alpha, targets, rslora, dtype = ADAPTERS[name]
        adir = os.path.join(out_dir, "adapters", name)
        subprocess.run([sys.executable, MAKE_LORA, "--base", out_dir, "--out", adir, "--rank", str(rank),
                        "--alpha", str(alpha), "--targets", targets, "--dtype", dtype, "--seed", str(seed + 10 + k),
                        *(["--rslora"] if rslora else [])], check=True)
        report[name] = record_adapter(out_dir, adir, prompts, base_logits, checkpoint_dtype)
    return report


def digest():
    """The script and the tools whose output it records."""
    h = hashlib.sha256()
    for path in (__file__, MAKE_MODEL, MAKE_LORA):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    stamp = os.path.join(args.out, "stamp.json")
    want = digest()
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f).get("sha256") == want:
                print(f"{args.out}: up to date")
                return
    ensure_deps()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shutil
    import torch
    import transformers
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    for k, shape in enumerate(MODELS):
        d = os.path.join(args.out, shape["name"])
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        report = build(shape, d, seed=4321 + 100 * k)
        for name, meta in report.items():
            print(f"{d}/adapters/{name}: {meta}")
    with open(stamp, "w") as f:
        json.dump({"sha256": want, "models": {m["name"]: MODEL_ADAPTERS[m["name"]] for m in MODELS}}, f)


if __name__ == "__main__":
    main()
