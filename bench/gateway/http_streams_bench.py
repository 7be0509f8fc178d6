#!/usr/bin/env python3
"""Gateway HTTP at scale: (a) N concurrent SSE streams held open at once through one
gateway: completed, peak streams at once, gateway RSS and threads at their peak; (b) tokens/s
through HTTP SSE vs gRPC streaming at 64 concurrent streams, HTTP and gRPC runs alternating,
medians over --reps. Prints a markdown table with the machine, command and date.

Starts its own stack (tokenizer, one worker, a fresh gateway per (a) row) from --bin-dir and
--model, or measures a running gateway given --gateway-http and --gateway-grpc (and
--gateway-pid for RSS/threads). Client: asyncio raw sockets for HTTP (tests/integration/gateway/
http_client.py), grpc.aio with the phi.v1 stubs (as tools/phi_cli) for gRPC.

  bench/gateway/http_streams_bench.py --streams 100,1000,2000 --reps 3
"""
import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "gateway"))


def setup_env(bin_dir, model):
    env = {"PHI_TOKENIZER_BIN": f"{bin_dir}/services/tokenizer/service/phi-tokenizer",
           "PHI_WORKER_BIN": f"{bin_dir}/services/worker/service/phi-worker",
           "PHI_GATEWAY_BIN": f"{bin_dir}/services/gateway/phi-gateway",
           "PHI_TEST_MODEL": model, "PHI_PROTO_PYTHON_DIR": f"{bin_dir}/proto/python"}
    for k, v in env.items():
        os.environ.setdefault(k, v)


def git_commit():
    """The checkout's commit, short hash and date, for result tables."""
    try:
        return subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %cI"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def chat_body(tokens, stream):
    return {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": tokens,
            "ignore_eos": True, "temperature": 0, "stream": stream}


async def grpc_streams(address, n, tokens, requests_per_stream, timeout):
    """n concurrent ChatStream calls, each `requests_per_stream` in a row: (tokens seen, completed,
    errors, peak at once)."""
    import grpc
    from phi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
    state = {"open": 0, "peak": 0, "tokens": 0, "done": 0, "errors": []}
    req = gateway_pb2.ChatRequest(
        messages=[gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_USER, content="Tell me a story.")],
        stopping=common_pb2.StoppingCriteria(max_new_tokens=tokens, ignore_eos=True))
    async with grpc.aio.insecure_channel(address) as ch:
        stub = gateway_pb2_grpc.ChatServiceStub(ch)

        async def one():
            for _ in range(requests_per_stream):
                began = False
                try:
                    last = None
                    async for m in stub.ChatStream(req, timeout=timeout):
                        if not began:
                            began = True
                            state["open"] += 1
                            state["peak"] = max(state["peak"], state["open"])
                        last = m
                    state["tokens"] += last.usage.completion_tokens if last is not None else 0
                    state["done"] += 1
                except grpc.aio.AioRpcError as e:
                    state["errors"].append(f"{e.code().name}: {e.details()}")
                finally:
                    if began:
                        state["open"] -= 1
        await asyncio.gather(*(one() for _ in range(n)))
    return state


async def http_streams(port, n, tokens, requests_per_stream, timeout):
    import http_client as hc
    body = json.dumps(chat_body(tokens, True)).encode()
    total = hc.StreamStats()

    async def one(i):
        for _ in range(requests_per_stream):
            await hc.sse_stream(port, "/v1/chat/completions", body, total, i, n, timeout)
    await asyncio.gather(*(one(i) for i in range(n)))
    return total


def run_a(args, s_or_none):
    """(a) rows: N streams held at once; a fresh gateway per row when we own the stack."""
    import http_client as hc
    rows = []
    for path in args.a_paths:
        for n in args.streams:
            if s_or_none is not None:
                grpc_port, port, _ = s_or_none.add_gateway(args=args.gateway_args)
                pid, grpc_addr = s_or_none.procs[-1].proc.pid, f"127.0.0.1:{grpc_port}"
            else:
                pid, port, grpc_addr = args.gateway_pid, int(args.gateway_http.rsplit(":", 1)[1]), args.gateway_grpc
            idle = hc.proc_status(pid) if pid else {}
            t0 = time.time()
            sampler = hc.Sampler(pid) if pid else None
            if sampler:
                sampler.__enter__()
            try:
                if path == "http":
                    st = asyncio.run(hc.run_streams(port, "/v1/chat/completions",
                                                    [json.dumps(chat_body(args.a_tokens, True)).encode()] * n,
                                                    timeout=args.timeout))
                    done, peak, statuses, errors = st.done, st.peak, st.statuses, [e for _, e in st.errors]
                else:
                    st = asyncio.run(grpc_streams(grpc_addr, n, args.a_tokens, 1, args.timeout))
                    done, peak, statuses, errors = st["done"], st["peak"], {}, st["errors"]
            finally:
                if sampler:
                    sampler.__exit__(None, None, None)
            wall = time.time() - t0
            errs = {}
            for e in errors:
                key = e.split(":")[0][:60]
                errs[key] = errs.get(key, 0) + 1
            rows.append({"path": path, "streams": n, "done": done, "peak": peak, "statuses": statuses,
                         "errors": errs, "wall": wall, "rss_idle": idle.get("VmRSS", 0) / 1024,
                         "rss_peak": sampler.peak_rss_kb / 1024 if sampler else None,
                         "thr_idle": idle.get("Threads"), "thr_peak": sampler.peak_threads if sampler else None,
                         "alive": (os.path.exists(f"/proc/{pid}") if pid else None)})
            print(f"# (a) {path} {n} streams: {rows[-1]}", file=sys.stderr, flush=True)
            if s_or_none is not None:
                p = s_or_none.procs.pop()
                p.stop()
    return rows


def cpu_seconds(pid):
    """utime + stime of a process, seconds (None without a pid)."""
    if not pid:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_b(args, http_port, grpc_addr, gateway_pid):
    res = {"http": [], "grpc": []}
    for rep in range(args.reps):
        for path in ("http", "grpc") if rep % 2 == 0 else ("grpc", "http"):
            cpu0 = cpu_seconds(gateway_pid)
            t0 = time.time()
            if path == "http":
                st = asyncio.run(http_streams(http_port, args.b_streams, args.b_tokens, args.b_requests, args.timeout))
                tokens, done, errors = st.done * args.b_tokens, st.done, len(st.errors)
            else:
                st = asyncio.run(grpc_streams(grpc_addr, args.b_streams, args.b_tokens, args.b_requests, args.timeout))
                tokens, done, errors = st["tokens"], st["done"], len(st["errors"])
            wall = time.time() - t0
            cpu = cpu_seconds(gateway_pid) - cpu0 if gateway_pid else None
            # The gateway's own CPU per 1,000 tokens: what the front end costs, whatever the client's cost.
            cpu_kt = 1e6 * cpu / tokens if cpu is not None and tokens else None
            res[path].append({"tps": tokens / wall, "done": done, "errors": errors, "wall": wall, "cpu_kt": cpu_kt})
            print(f"# (b) rep {rep} {path}: {tokens / wall:.0f} tokens/s, {done} done, {errors} errors, "
                  f"{wall:.2f} s", file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="100,1000,2000", help="(a): concurrent SSE streams per row")
    ap.add_argument("--a-paths", default="http", help="(a): http, grpc or http,grpc (gRPC: the same streams "
                    "through ChatStream, for comparison)")
    ap.add_argument("--a-tokens", type=int, default=128, help="(a): max_tokens per stream (ignore_eos)")
    ap.add_argument("--b-streams", type=int, default=64, help="(b): concurrent streams")
    ap.add_argument("--b-tokens", type=int, default=256, help="(b): max_tokens per request")
    ap.add_argument("--b-requests", type=int, default=2, help="(b): requests in a row per stream")
    ap.add_argument("--reps", type=int, default=3, help="(b): HTTP/gRPC pairs (alternating order)")
    ap.add_argument("--skip", default="", help="a or b: leave that part out")
    ap.add_argument("--timeout", type=float, default=180, help="per-stream read timeout, s")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--model", default=os.path.join(ROOT, "build", "release", "tests", "integration", "gateway",
                                                    "model"))
    ap.add_argument("--gateway-args", default="", help="extra phi-gateway flags (one string)")
    ap.add_argument("--worker-args", default="--max-running 2048 --max-waiting 8192 --max-batch-tokens 8192 "
                                             "--kv-cache-blocks 16384 --threads 1")
    ap.add_argument("--gateway-http", help="host:port of a running gateway's HTTP (no stack started)")
    ap.add_argument("--gateway-grpc", help="host:port of that gateway's gRPC")
    ap.add_argument("--gateway-pid", type=int, help="its pid, for RSS and threads")
    ap.add_argument("--label", default="", help="a name for this run in the table (e.g. before/after)")
    args = ap.parse_args()
    args.streams = [int(x) for x in args.streams.split(",") if x]
    args.a_paths = [x for x in args.a_paths.split(",") if x]
    args.gateway_args = shlex.split(args.gateway_args)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    setup_env(args.bin_dir, args.model)
    s = None
    if args.gateway_http:
        http_port, grpc_addr = int(args.gateway_http.rsplit(":", 1)[1]), args.gateway_grpc
        gateway_pid = args.gateway_pid
    else:
        import stack
        s = stack.Stack(workers=1, worker_args=shlex.split(args.worker_args), gateway_args=args.gateway_args)
        http_port, grpc_addr = s.http_port, f"127.0.0.1:{s.port}"
        gateway_pid = next(p.proc.pid for p in s.procs if p.name == "gateway")
    gw_bin = os.environ.get("PHI_GATEWAY_BIN", "")
    commit = git_commit()
    load0 = os.getloadavg()
    t_start = datetime.datetime.now(datetime.timezone.utc)
    try:
        a = run_a(args, s) if "a" not in args.skip else []
        b = run_b(args, http_port, grpc_addr, gateway_pid) if "b" not in args.skip and grpc_addr else None
    finally:
        if s is not None:
            s.close()
    load1 = os.getloadavg()

    out = [f"### {args.label or 'run'}: {t_start:%Y-%m-%d %H:%M} UTC",
           "",
           f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs, load (1 min) {load0[0]:.1f} -> {load1[0]:.1f}",
           f"- Gateway: `{gw_bin}` (repo at {commit}); model `{args.model}`",
           f"- Command: `{' '.join(shlex.quote(x) for x in sys.argv)}`",
           ""]
    if a:
        out += [f"(a) concurrent chat streams (HTTP: one connection each), max_tokens {args.a_tokens} (ignore_eos):",
                "",
                "| path | streams | completed | peak at once | gateway RSS idle → peak MB | threads idle → peak | "
                "wall s | HTTP statuses / errors |",
                "|---|---:|---:|---:|---|---|---:|---|"]
        for r in a:
            rss = f"{r['rss_idle']:.0f} → {r['rss_peak']:.0f}" if r["rss_peak"] is not None else "-"
            thr = f"{r['thr_idle']} → {r['thr_peak']}" if r["thr_peak"] is not None else "-"
            errs = ", ".join(f"{k} ×{v}" for k, v in r["errors"].items()) or "none"
            out.append(f"| {'HTTP SSE' if r['path'] == 'http' else 'gRPC'} | {r['streams']} | {r['done']} | {r['peak']} | {rss} | {thr} | {r['wall']:.1f} | "
                       f"{r['statuses']} / {errs}{'' if r['alive'] in (True, None) else ' / gateway DIED'} |")
        out.append("")
    if b:
        med = {k: statistics.median(x["tps"] for x in v) for k, v in b.items()}
        out += [f"(b) tokens/s at {args.b_streams} concurrent streams, {args.b_requests} × {args.b_tokens} tokens "
                f"each, {args.reps} reps alternating (median, min–max):",
                "",
                "| path | tokens/s median | min–max | gateway CPU ms per 1,000 tokens (median) | "
                "completed / errors per rep |",
                "|---|---:|---|---:|---|"]
        for k in ("http", "grpc"):
            v = b[k]
            cpus = [x["cpu_kt"] for x in v if x["cpu_kt"] is not None]
            cpu = f"{statistics.median(cpus):.1f}" if cpus else "-"
            out.append(f"| {'HTTP SSE' if k == 'http' else 'gRPC ChatStream'} | {med[k]:.0f} | "
                       f"{min(x['tps'] for x in v):.0f}–{max(x['tps'] for x in v):.0f} | {cpu} | "
                       + ", ".join(f"{x['done']}/{x['errors']}" for x in v) + " |")
        out += ["", f"HTTP / gRPC: {med['http'] / med['grpc']:.3f}" if med["grpc"] else "", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
