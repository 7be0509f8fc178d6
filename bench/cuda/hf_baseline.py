"""Hugging Face transformers baseline for bench/cuda: PhiForCausalLM, BF16, greedy `generate` of N
tokens after a P-token prompt at batch 1, eager attention; either random weights with the
Phi-1.5 shape or, with --model-dir, the safetensors folder our own benchmarks load (the same
values: tools/device_check/device_check.sh passes the checkpoint cuda_engine_bench runs on).

    python3 bench/cuda/hf_baseline.py [--model-dir DIR] [--device cuda|cpu] [--prompt 512]
                                      [--gen 256] [--compile]

--compile: the static KV cache + torch.compile way transformers documents for fast generate.
Where transformers has `CompileConfig` (>= 4.47; the device runs 5.x), generate itself compiles
the decode step when the cache is static (prefill stays eager) and the compile config says how:
here reduce-overhead (CUDA graphs on a GPU), fullgraph. On a CPU generate only compiles when
told to (CompileConfig._compile_all_devices, transformers' own switch for testing), which is
how this script is checked on machines without a GPU. Older transformers: model.forward is
compiled by hand. The warm-up runs the exact calls that are timed (same prompt length, same
max_new_tokens, same order), so the static cache and every compiled shape exist before the
clock starts; the script prints the warm-up (compile) time and how many graphs were compiled
before and during the timed runs (during should be 0).

The last three lines printed are what tools/device_check/device_check.sh keeps (tail -3): weights and device,
warm-up, and the result line.
"""
import argparse
import sys
import time

import torch
import transformers
from packaging.version import Version
from transformers import PhiConfig, PhiForCausalLM

TV = Version(transformers.__version__)


def phi15_config():
    # microsoft/phi-1_5 (and rasyosef/Phi-1_5-Instruct-v0.1) shape; tools/make_model.py's
    # phi-1_5 preset writes the same.
    return PhiConfig(vocab_size=51200, hidden_size=2048, intermediate_size=8192,
                     num_hidden_layers=24, num_attention_heads=32, partial_rotary_factor=0.5,
                     max_position_embeddings=2048, hidden_act="gelu_new", layer_norm_eps=1e-5,
                     rope_theta=10000.0, tie_word_embeddings=False)


def load(a, device):
    if a.model_dir:
        # transformers 4.56 renamed from_pretrained's torch_dtype to dtype; an unknown keyword
        # would be taken as a config attribute and the model loaded in FP32.
        dkey = "dtype" if TV >= Version("4.56") else "torch_dtype"
        model = PhiForCausalLM.from_pretrained(a.model_dir, attn_implementation="eager",
                                               **{dkey: torch.bfloat16}).to(device)
        what = f"{a.model_dir} (safetensors)"
    else:
        cfg = phi15_config()
        cfg._attn_implementation = "eager"
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            model = PhiForCausalLM(cfg)
        torch.set_default_dtype(torch.float32)
        what = "random init (seed 0, Phi-1.5 shape)"
    model.eval()
    return model, what


def unique_graphs():
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 (older torch: no counter, report none)
        return -1


def setup_compile(model, kw, device, fullgraph):
    """Sets kw (and the model) up for static cache + torch.compile; returns a description."""
    if not hasattr(torch, "compile"):
        sys.exit(f"--compile needs torch >= 2.0 (torch.compile); this is torch {torch.__version__}")
    kw["cache_implementation"] = "static"
    try:
        from transformers import CompileConfig
    except ImportError:
        CompileConfig = None
    if CompileConfig is not None:
        # ref: transformers generation docs (CompileConfig; "static cache and torch.compile"):
        # generate compiles the decode forward itself when the cache is static.
        cc = CompileConfig(fullgraph=fullgraph, mode="reduce-overhead")
        if device.type != "cuda":
            cc._compile_all_devices = True
        kw["compile_config"] = cc
        return f"generate's CompileConfig(mode=reduce-overhead, fullgraph={fullgraph})"
    if not hasattr(model, "_eager_forward"):
        model._eager_forward = model.forward
    model.forward = torch.compile(model._eager_forward, mode="reduce-overhead", fullgraph=fullgraph)
    return f"torch.compile(model.forward, mode=reduce-overhead, fullgraph={fullgraph})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    ap.add_argument("--gen", type=int, default=256, help="generated tokens (default 256)")
    ap.add_argument("--compile", action="store_true", help="static cache + torch.compile")
    ap.add_argument("--model-dir", help="load this safetensors folder (e.g. tools/make_model.py "
                    "--preset phi-1_5 --dtype bf16) instead of random init")
    ap.add_argument("--device", default="cuda", help="torch device (default cuda; cpu to check "
                    "the script on a machine without a GPU)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up rounds of the timed calls "
                    "(default 1 eager, 2 with --compile: the first compiles, the second lets "
                    "CUDA graphs record)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args()
    if a.prompt < 1 or a.gen < 2 or (a.warmup is not None and a.warmup < 1):
        ap.error("--prompt must be >= 1, --gen >= 2 and --warmup >= 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible to torch (use --device cpu)")
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    t0 = time.perf_counter()
    model, weights = load(a, device)
    sync()
    load_s = time.perf_counter() - t0
    cfg = model.config
    if a.prompt + a.gen > cfg.max_position_embeddings:
        sys.exit(f"--prompt + --gen = {a.prompt + a.gen} exceeds max_position_embeddings "
                 f"{cfg.max_position_embeddings}")
    nparams = sum(p.numel() for p in model.parameters())
    shape = (f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}, "
             f"{nparams / 1e6:.1f}M params, {next(model.parameters()).dtype}")
    # Progress lines as it goes (a run cut off by a timeout still says how far it got); the
    # summary is the last three lines.
    print(f"loaded {weights} on {dev_name} in {load_s:.1f} s", flush=True)

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(50000, cfg.vocab_size), (1, a.prompt), generator=g).to(device)
    # min_new_tokens: exactly --gen tokens even when the checkpoint's eos comes up.
    kw = dict(do_sample=False, pad_token_id=0)
    mode = "eager"
    fullgraph = True
    if a.compile:
        mode = "static cache + torch.compile"
        how = setup_compile(model, kw, device, fullgraph)
    rounds = a.warmup if a.warmup is not None else (2 if a.compile else 1)

    def gen(n):
        return model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)

    warm = []
    with torch.no_grad():
        for r in range(rounds):
            t0 = time.perf_counter()
            try:
                gen(1)
                out = gen(a.gen)
            except Exception as e:  # noqa: BLE001
                if not (a.compile and fullgraph and r == 0):
                    raise
                # A graph break under fullgraph=True: say so and compile without it, so the
                # run still gives a number (fewer, split graphs are slower, not wrong).
                print(f"fullgraph=True failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "retrying with fullgraph=False", flush=True)
                torch._dynamo.reset()
                fullgraph = False
                kw.pop("compile_config", None)
                how = setup_compile(model, kw, device, fullgraph)
                gen(1)
                out = gen(a.gen)
            sync()
            warm.append(time.perf_counter() - t0)
            print(f"warm-up round {r + 1}: {warm[-1]:.1f} s", flush=True)
        graphs_warm = unique_graphs()
        t0 = time.perf_counter()
        gen(1)
        sync()
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        out2 = gen(a.gen)
        sync()
        dt = time.perf_counter() - t0
        graphs_timed = unique_graphs() - graphs_warm if graphs_warm >= 0 else -1
    n = out2.shape[1] - a.prompt
    same = bool(torch.equal(out, out2))
    toks = out2[0, a.prompt:a.prompt + 8].tolist()

    print(f"weights: {weights}; {shape}; device: {dev_name}; load {load_s:.1f} s", flush=True)
    line2 = (f"warm-up ({rounds} x generate {a.prompt}+1 and {a.prompt}+{a.gen}): "
             + ", ".join(f"{w:.1f} s" for w in warm))
    if a.compile:
        line2 += (f"; {how}; graphs compiled in warm-up {graphs_warm}, in timed runs "
                  f"{graphs_timed}")
    line2 += f"; greedy tokens {toks}{'' if same else ' (differ from warm-up!)'}"
    print(line2, flush=True)
    print(f"transformers {transformers.__version__} torch {torch.__version__} ({mode}): "
          f"TTFT {ttft * 1e3:.1f} ms; {n} tokens in {dt:.3f} s incl. prefill; "
          f"decode {(n - 1) / (dt - ttft):.0f} tok/s, {(dt - ttft) / (n - 1) * 1e3:.2f} ms/token",
          flush=True)


if __name__ == "__main__":
    main()
