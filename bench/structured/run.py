#!/usr/bin/env python3
"""Tokens/s with and without constrained decoding: the same requests through the real
phi-tokenizer, phi-worker (CPU backend) and phi-gateway on loopback, at 1 and 16 concurrent
sequences, `--tokens` new tokens each, unconstrained vs a ~20-field JSON schema (compact:
any_whitespace false). Prints a markdown table (median tokens/s of --reps runs per cell, each run's
value, the constrained cost) with the machine, commit, date and command.

A grammar cannot be run with ignore_eos, so the constrained requests use a schema whose every
output is longer than --tokens (20 fields, 8 of them strings of exactly --string-length
characters): each ends by max_new_tokens, and the unconstrained ones (ignore_eos) generate as
many tokens. Tokens/s is completion tokens of all sequences over the wall time from the first
request sent to the last reply (prompts are ~10 tokens, so prefill is a small part of it).
Unconstrained and constrained runs alternate, the order flipping each repetition, after a warm-up
of each (the warm-up compiles the schema; later requests hit the worker's grammar cache). Every
constrained output that ended by the grammar is checked with jsonschema.

  bench/structured/run.py [--bin-dir build/release] [--model DIR] [--reps 5 --tokens 128]

With no --model, a mid-size random model is written to /tmp/phi-structured-bench-model-1536x16
first: Phi-1.5 Instruct's real tokenizer (51,200 output rows, so the mask has the real vocabulary's
width), hidden 1536, 16 layers, 24 heads, intermediate 6144, bf16 (0.6 B parameters: 16 sequences
x 128 tokens take ~20 s on 2 cores; the Phi-1.5 shape, 1.4 B, would take minutes per cell).
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "gateway"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "structured"))
sys.path.insert(0, os.path.join(ROOT, "bench", "gateway"))
from http_streams_bench import git_commit, setup_env  # noqa: E402

DEFAULT_MODEL = "/tmp/phi-structured-bench-model-1536x16"
MODEL_FLAGS = ["--preset", "phi-1_5", "--hidden-size", "1536", "--intermediate-size", "6144",
               "--num-layers", "16", "--num-heads", "24", "--dtype", "bf16"]
PROMPT = "Fill in the form as JSON.\n"


def machine():
    """lscpu's model name, core count and the ISA extensions that the CPU kernels use."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags]
    return (f"{info.get('Model name', '?').strip()}, {os.cpu_count()} CPUs, {info.get('Architecture', '?').strip()} "
            f"({' '.join(isa) or 'no AVX2'}), load average {os.getloadavg()[0]:.1f} at start")


def run_batch(stub, pb, concurrency, tokens, schema_text, seed0):
    """`concurrency` Complete calls at once; (completion tokens, seconds, outputs ended by the grammar)."""
    common_pb2, gateway_pb2 = pb

    def one(i):
        sampling = common_pb2.SamplingParams(temperature=1.0, seed=seed0 + i)
        stopping = common_pb2.StoppingCriteria(max_new_tokens=tokens, ignore_eos=schema_text is None)
        if schema_text is not None:
            sampling.constraint.json_schema = schema_text
        return stub.Complete(gateway_pb2.CompleteRequest(prompt=PROMPT, sampling=sampling, stopping=stopping),
                             timeout=1800)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(one, range(concurrency)))
    wall = time.monotonic() - t0
    ended = [r.text for r in replies if r.finish_reason == common_pb2.FINISH_REASON_STOP]
    return sum(r.usage.completion_tokens for r in replies), wall, ended


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "release"))
    p.add_argument("--model", help=f"model folder (default: write {DEFAULT_MODEL} when missing)")
    p.add_argument("--threads", type=int, default=2, help="worker --threads")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--string-length", type=int, default=48)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()

    model = args.model or DEFAULT_MODEL
    if not args.model and not os.path.isdir(model):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_model.py"), "--out", model, *MODEL_FLAGS],
                       check=True)
    setup_env(os.path.abspath(args.bin_dir), os.path.abspath(model))
    import stack  # noqa: E402 (needs PHI_PROTO_PYTHON_DIR)
    import jsonschema
    from phi.v1 import common_pb2, gateway_pb2
    from schemas import bench_schema
    schema = bench_schema(args.string_length)
    schema_text = json.dumps(schema)
    validator = jsonschema.Draft202012Validator(schema)
    pb = (common_pb2, gateway_pb2)
    levels = [int(x) for x in args.concurrency.split(",")]

    started = datetime.datetime.now(datetime.timezone.utc)
    host = machine()
    s = stack.Stack(workers=1, worker_args=["--threads", str(args.threads)])
    try:
        stub = s.chat_stub()
        t = time.monotonic()
        run_batch(stub, pb, 1, 8, schema_text, 0)  # compiles the schema
        compile_and_8 = time.monotonic() - t
        t = time.monotonic()
        run_batch(stub, pb, 1, 8, schema_text, 0)
        cached_8 = time.monotonic() - t
        run_batch(stub, pb, 1, 8, None, 0)
        results = {(c, mode): [] for c in levels for mode in ("free", "json")}
        short, invalid = 0, []
        for rep in range(args.reps):
            for c in levels:
                for mode in (("free", "json") if rep % 2 == 0 else ("json", "free")):
                    n, wall, ended = run_batch(stub, pb, c, args.tokens, schema_text if mode == "json" else None,
                                               1000 * rep)
                    results[(c, mode)].append(n / wall)
                    short += len(ended) if mode == "json" else 0
                    for text in ended if mode == "json" else []:
                        try:
                            validator.validate(json.loads(text))
                        except Exception as e:  # noqa: BLE001 (reported)
                            invalid.append(f"{e}: {text[:120]!r}")
                    print(f"rep {rep} c={c} {mode}: {n} tokens in {wall:.2f} s = {n / wall:.1f} tok/s",
                          file=sys.stderr, flush=True)
    finally:
        s.close()

    print(f"\nMachine: {host}. Worker: CPU backend, --threads {args.threads}. Model: {model} "
          f"({' '.join(MODEL_FLAGS) if not args.model else 'given'}).")
    print(f"Commit: {git_commit()}. Date: {started:%Y-%m-%d %H:%M} UTC.")
    print(f"Command: {' '.join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])}")
    print(f"{args.tokens} new tokens per sequence, temperature 1.0, {args.reps} runs per cell, order alternating. "
          f"Schema: 20 fields (8 strings of {args.string_length} characters), any_whitespace false; "
          f"first request {compile_and_8:.2f} s (compile + 8 tokens), second {cached_8:.2f} s.\n")
    print("| sequences | unconstrained tok/s | constrained tok/s | cost (1 - constrained / unconstrained) "
          "| runs (unconstrained / constrained) |")
    print("|---:|---:|---:|---:|---|")
    for c in levels:
        free, js = results[(c, "free")], results[(c, "json")]
        mf, mj = statistics.median(free), statistics.median(js)
        runs = ", ".join(f"{a:.1f}" for a in free) + " / " + ", ".join(f"{b:.1f}" for b in js)
        print(f"| {c} | {mf:.1f} | {mj:.1f} | {100 * (1 - mj / mf):+.1f}% | {runs} |")
    print(f"\nConstrained outputs that ended by the grammar before {args.tokens} tokens: {short}; "
          f"of those invalid: {len(invalid)}")
    for line in invalid[:5]:
        print("  " + line)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
