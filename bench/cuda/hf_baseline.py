"""Hugging Face transformers baseline for bench/cuda: PhiForCausalLM with the Phi-1.5 shape,
random BF16 weights on the GPU (same shape as phi_cuda_bench, not the same values), greedy
generate of N tokens after a P-token prompt at batch 1, eager attention.

    python3 bench/cuda/hf_baseline.py [--prompt 512] [--gen 256] [--compile]
"""
import argparse
import time

import torch
import transformers
from transformers import PhiConfig, PhiForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--compile", action="store_true", help="static cache + torch.compile")
    ap.add_argument("--model-dir", help="load this safetensors folder (e.g. tools/make_model.py "
                    "--preset phi-1_5) instead of random init")
    a = ap.parse_args()
    cfg = PhiConfig(vocab_size=51200, hidden_size=2048, intermediate_size=8192,
                    num_hidden_layers=24, num_attention_heads=32, partial_rotary_factor=0.5,
                    max_position_embeddings=2048, hidden_act="gelu_new", layer_norm_eps=1e-5,
                    rope_theta=10000.0, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    if a.model_dir:
        model = PhiForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.bfloat16,
                                               attn_implementation="eager").to("cuda")
    else:
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = PhiForCausalLM(cfg)
    model.eval()
    ids = torch.randint(0, 50000, (1, a.prompt), device="cuda")
    kw = dict(do_sample=False, pad_token_id=0)
    if a.compile:
        kw["cache_implementation"] = "static"
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for _ in range(2):
            model.generate(ids, max_new_tokens=16, min_new_tokens=16, **kw)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        torch.cuda.synchronize()
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=a.gen, min_new_tokens=a.gen, **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    n = out.shape[1] - a.prompt
    mode = "static cache + torch.compile" if a.compile else "eager"
    print(f"transformers {transformers.__version__} torch {torch.__version__} ({mode}): "
          f"TTFT {ttft * 1e3:.1f} ms; {n} tokens in {dt:.3f} s incl. prefill; "
          f"decode {(n - 1) / (dt - ttft):.0f} tok/s, {(dt - ttft) / (n - 1) * 1e3:.2f} ms/token")


if __name__ == "__main__":
    main()
