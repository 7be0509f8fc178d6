#!/usr/bin/env python3
"""Scoring throughput through the gateway: lm-evaluation-harness's loglikelihood
request (POST /v1/completions with echo, logprobs 1, max_tokens 0) with ~--prompt-tokens-token
prompts, --concurrency clients in a loop for --seconds, per tokenizer mode: `service` (texts
of the prompt tokens through the tokenizer service, batched Decodes) and `local`
(--local-tokenizer: in-process). Prints a markdown table (requests/s, prompt tokens/s, latency
p50 and p90, CPU milliseconds per request of the gateway, the tokenizer service and the worker)
with the machine, command and date.

Every request has a prompt of its own (random words), so the worker's prefix cache cannot serve
one from another's. Starts its own stack (tokenizer, one worker, one gateway per mode) from
--bin-dir and --model; modes run in turn on the same worker, after a warm-up request each.

  bench/gateway/score_bench.py --model build/release/tests/integration/gateway/model --seconds 30
"""
import argparse
import datetime
import http.client
import json
import os
import random
import shlex
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "gateway"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_streams_bench import cpu_model, cpu_seconds, git_commit, setup_env  # noqa: E402

WORDS = ("the of and to in is was for on that with as by at from his her an were are which this be or has "
         "had not but one all their they it he she we you new first two time year people state world city "
         "school system house water music river light night story number point game power question answer "
         "because however although during between several different important following").split()


def words_for(encode, tokens):
    """How many random words make about `tokens` tokens with this tokenizer."""
    rng = random.Random(0)
    sample = " ".join(rng.choice(WORDS) for _ in range(tokens))
    return max(1, round(tokens * tokens / len(encode(sample))))


def score(conn, prompt, timeout):
    body = json.dumps({"prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0, "temperature": 0})
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {data[:300]!r}")
    resp = json.loads(data)
    n = resp["usage"]["prompt_tokens"]
    lp = resp["choices"][0]["logprobs"]
    if len(lp["tokens"]) != n or lp["token_logprobs"][0] is not None or None in lp["token_logprobs"][1:]:
        raise RuntimeError(f"{len(lp['tokens'])} token texts for {n} prompt tokens")
    return n


def run_mode(port, n_words, concurrency, seconds, timeout, seed):
    """Clients in a loop until `seconds` pass (requests started before then finish)."""
    lat, tokens, errors = [], [], []
    lock = threading.Lock()
    t0 = time.monotonic()
    stop = t0 + seconds

    def client(i):
        rng = random.Random(seed * 1000 + i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while time.monotonic() < stop:
            prompt = " ".join(rng.choice(WORDS) for _ in range(n_words))
            t = time.monotonic()
            try:
                n = score(conn, prompt, timeout)
            except Exception as e:  # noqa: BLE001 (counted and shown)
                with lock:
                    errors.append(str(e)[:200])
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                continue
            with lock:
                lat.append(time.monotonic() - t)
                tokens.append(n)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    return {"done": len(lat), "wall": wall, "rps": len(lat) / wall, "tps": sum(tokens) / wall,
            "mean_tokens": statistics.mean(tokens) if tokens else 0,
            "p50": statistics.median(lat) if lat else float("nan"),
            "p90": statistics.quantiles(lat, n=10)[-1] if len(lat) >= 2 else float("nan"), "errors": errors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "build", "release", "tests", "integration", "gateway",
                                                    "model"))
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--modes", default="service,local", help="service, local or both (in this order)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30, help="per mode")
    ap.add_argument("--prompt-tokens", type=int, default=1000, help="about this many tokens per prompt")
    ap.add_argument("--timeout", type=float, default=600, help="per request, s")
    ap.add_argument("--worker-args", default="--threads 2 --kv-cache-blocks 1024",
                    help="extra phi-worker flags (one string)")
    ap.add_argument("--label", default="", help="a name for this run in the table")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]

    setup_env(args.bin_dir, args.model)
    os.environ["PHI_TEST_MODEL"] = args.model
    import stack
    from stack import tokenizer_pb2, tokenizer_pb2_grpc

    commit = git_commit()
    load0 = os.getloadavg()
    t_start = datetime.datetime.now(datetime.timezone.utc)
    t_boot = time.monotonic()
    s = stack.Stack(workers=1, worker_args=shlex.split(args.worker_args))
    rows = []
    try:
        boot = time.monotonic() - t_boot
        tok = tokenizer_pb2_grpc.TokenizerServiceStub(stack.channel(f"127.0.0.1:{s.tok_port}"))

        def encode(text):
            r = tok.Encode(tokenizer_pb2.EncodeRequest(prompts=[tokenizer_pb2.Prompt(text=text.encode())]),
                           timeout=30)
            return r.encodings[0].ids

        n_words = words_for(encode, args.prompt_tokens)
        ports = {"service": s.http_port}
        pids = {"service": s.procs[-1].proc.pid, "tokenizer": s.procs[0].proc.pid, "worker": s.procs[1].proc.pid}
        if "local" in modes:
            ports["local"] = s.add_gateway(args=["--local-tokenizer", args.model])[1]
            pids["local"] = s.procs[-1].proc.pid
        for k, mode in enumerate(modes):
            conn = http.client.HTTPConnection("127.0.0.1", ports[mode], timeout=args.timeout)
            score(conn, " ".join(random.Random(-1 - k).choice(WORDS) for _ in range(n_words)), args.timeout)
            conn.close()
            cpu0 = {p: cpu_seconds(pid) for p, pid in pids.items()}
            r = run_mode(ports[mode], n_words, args.concurrency, args.seconds, args.timeout, seed=k + 1)
            cpu = {p: cpu_seconds(pid) - cpu0[p] for p, pid in pids.items()}
            r["cpu_ms"] = {p: 1e3 * cpu[p] / max(r["done"], 1) for p in ("worker", "tokenizer")}
            r["cpu_ms"]["gateway"] = 1e3 * cpu[mode] / max(r["done"], 1)
            r["mode"] = mode
            rows.append(r)
            print(f"{mode}: {r['done']} requests, {r['rps']:.2f}/s, errors {len(r['errors'])}", file=sys.stderr)
    finally:
        s.close()
    load1 = os.getloadavg()

    out = [f"### {args.label or 'run'}: {t_start:%Y-%m-%d %H:%M} UTC",
           "",
           f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs, load (1 min) {load0[0]:.1f} -> {load1[0]:.1f}",
           f"- Gateway: `{os.environ['PHI_GATEWAY_BIN']}` (repo at {commit}); model `{args.model}` "
           f"(stack up in {boot:.0f} s)",
           f"- Command: `{' '.join(shlex.quote(x) for x in sys.argv)}`",
           "",
           f"{args.concurrency} concurrent clients, {args.seconds:.0f} s per mode, echo + logprobs 1 + max_tokens 0, "
           f"a fresh prompt of {n_words} random words per request:",
           "",
           "| tokenizer | requests | requests/s | prompt tokens/s | mean prompt tokens | p50 s | p90 s | "
           "CPU ms/request gateway / tokenizer / worker | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        errs = f"{len(r['errors'])}: {r['errors'][0]}" if r["errors"] else "0"
        c = r["cpu_ms"]
        name = "service (batched Decode)" if r["mode"] == "service" else "--local-tokenizer"
        out.append(f"| {name} | {r['done']} | {r['rps']:.2f} | {r['tps']:.0f} | {r['mean_tokens']:.0f} | "
                   f"{r['p50']:.3f} | {r['p90']:.3f} | {c['gateway']:.1f} / {c['tokenizer']:.1f} / {c['worker']:.0f} | "
                   f"{errs} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
