#!/usr/bin/env python3
"""The real local stack watched by a real Prometheus, as docs/operations.md sets it up.

    monitoring_stack_test.py --root REPO --model DIR --tokenizer BIN --worker BIN --gateway BIN
                             [--prometheus PATH]

Starts phi-tokenizer, one phi-worker and phi-gateway on loopback (free ports), and Debian's
Prometheus with monitoring/prometheus.yml (its jobs, labels and rule files; targets moved to
the ports used here, scrape and rule interval 1 s). Sends traffic over HTTP (chat, streaming
chat, completions, one unknown model) and gRPC (ListModels, Chat). Then, through
Prometheus's HTTP API:
  * every target is up;
  * request, token and gRPC counters moved; the TTFT histograms have observations;
  * every rule evaluates without error and every recording rule yields series;
  * every Grafana dashboard query evaluates without error and returns data;
  * no alert fires; then, with the worker killed, `up`, the group readiness rule and the
    gateway's ready groups drop to 0 (the inputs of the not-ready alerts);
and, from the /metrics pages: each service exports every metric that monitoring/metrics.yml
lists for it, and no phi_* metric that the catalogue (hence the docs) lacks.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def start(name, argv, logdir):
    log = open(os.path.join(logdir, f"{name}.log"), "wb")
    return name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log.name


def tail(path, n=3000):
    with open(path, "rb") as f:
        return f.read()[-n:].decode("utf-8", "replace")


def metrics_text(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def families(text):
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def post(port, path, body, timeout=60):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--prometheus", default="prometheus")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    sys.path.insert(0, os.path.join(root, "tests", "monitoring"))
    import prom_live  # noqa: E402
    import yaml  # noqa: E402

    checker = prom_live.Checker()
    logdir = tempfile.mkdtemp(prefix="phi-monitoring-stack-")
    fp = prom_live.free_port
    tok_port, tok_m, wrk_port, wrk_m = fp(), fp(), fp(), fp()
    gw_port, gw_http, gw_m = fp(), fp(), fp()
    common = ["--host=127.0.0.1", f"--model={args.model}"]
    procs = [
        start("tokenizer", [args.tokenizer, *common, f"--port={tok_port}", f"--metrics-port={tok_m}"], logdir),
        start("worker", [args.worker, *common, f"--port={wrk_port}", f"--metrics-port={wrk_m}", "--threads=1",
                         "--kv-cache-mb=64"], logdir),
        start("gateway", [args.gateway, "--host=127.0.0.1", f"--port={gw_port}", f"--http-port={gw_http}",
                          f"--metrics-port={gw_m}", f"--tokenizer=127.0.0.1:{tok_port}",
                          f"--workers=127.0.0.1:{wrk_port}", "--health-interval-seconds=0.2"], logdir),
    ]
    prom = None
    try:
        # Ready when the gateway has the worker group in rotation.
        def stack_ready():
            for name, p, log in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail(log)}")
            try:
                return 'phi_gateway_worker_groups{state="ready"} 1' in metrics_text(gw_m)
            except (urllib.error.URLError, ConnectionError):
                return False
        prom_live.wait_for(stack_ready, 120, "stack not ready")
        print(f"ok:   stack up (logs in {logdir})")

        targets = {"phi-gateway": f"127.0.0.1:{gw_m}", "phi-tokenizer": f"127.0.0.1:{tok_m}",
                   "phi-worker": f"127.0.0.1:{wrk_m}"}
        prom = prom_live.Prometheus(prom_live.local_config(root, targets), args.prometheus)
        prom.wait_ready()
        # Counters must have a sample before the traffic, or increase() cannot see it.
        prom_live.wait_for(lambda: len(prom.query("up == 1")["data"]["result"]) == 3, 30,
                           "targets not scraped")

        # Traffic: concurrent HTTP chats (batching), streams, completions, one client error,
        # and the gRPC API.
        model = os.path.basename(os.path.normpath(args.model))
        chat = {"model": model, "messages": [{"role": "user", "content": "Tell me about metrics."}],
                "max_tokens": 12}
        jobs = [("/v1/chat/completions", chat)] * 6 + \
               [("/v1/chat/completions", dict(chat, stream=True))] * 3 + \
               [("/v1/completions", {"model": model, "prompt": "Once upon a time", "max_tokens": 8})] * 2
        proto_dir = os.environ.get("PHI_PROTO_PYTHON_DIR", "")
        sys.path.insert(0, proto_dir)
        import grpc  # noqa: E402
        from phi.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
        stub = gateway_pb2_grpc.ChatServiceStub(grpc.insecure_channel(f"127.0.0.1:{gw_port}"))

        def traffic(wave):
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                results = list(ex.map(lambda j: post(gw_http, *j), jobs))
            checker.check(all(code == 200 for code, _ in results),
                          f"wave {wave}: {len(results)} HTTP requests answered 200 ({[c for c, _ in results]})")
            code, _ = post(gw_http, "/v1/chat/completions", dict(chat, model="no-such-model"))
            checker.check(code == 404, f"wave {wave}: unknown model answered 404 (got {code})")
            stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=10)
            r = stub.Chat(gateway_pb2.ChatRequest(
                messages=[gateway_pb2.ChatMessage(role=gateway_pb2.ROLE_USER, content="Hello")],
                stopping=common_pb2.StoppingCriteria(max_new_tokens=8)), timeout=60)
            checker.check(r.usage.completion_tokens > 0, f"wave {wave}: gRPC Chat answered")

        # A labelled series (route/code, method/code) is born with its first request, and
        # increase()/rate() need a sample before the change: a first wave creates the series,
        # the second one moves them once Prometheus has scraped them.
        traffic(1)
        born = ['phi_gateway_requests_total{code="OK"}', 'phi_gateway_requests_total{code="NOT_FOUND"}',
                'phi_grpc_server_requests_total{job="phi-gateway"}',
                'phi_grpc_server_requests_total{job="phi-worker",method="Generate"}',
                'phi_grpc_server_requests_total{job="phi-tokenizer"}']
        prom_live.wait_for(lambda: all(prom.query(b)["data"]["result"] for b in born) or
                           [b for b in born if not prom.query(b)["data"]["result"]], 30, "series not scraped")
        time.sleep(1.5)  # one more scrape of the unchanged values
        traffic(2)

        # Catalogue <-> what the services export.
        with open(os.path.join(root, "monitoring", "metrics.yml")) as f:
            catalogue = yaml.safe_load(f)["metrics"]
        for service, port in (("gateway", gw_m), ("tokenizer", tok_m), ("worker", wrk_m)):
            exported = families(metrics_text(port))
            want = {m["name"] for m in catalogue if service in m["services"]}
            known = {m["name"] for m in catalogue}
            missing = sorted(want - exported)
            unknown = sorted(n for n in exported - known if n.startswith("phi_"))
            checker.check(not missing and not unknown,
                          f"{service} exports the catalogued metrics (missing: {missing}, not catalogued: {unknown})")

        names = prom_live.recording_rule_names(root)

        def recorded_after_traffic():
            missing = [n for n in names if not prom.query(n)["data"]["result"]]
            moved = prom.query("increase(phi_worker_generated_tokens_total[1m]) > 0")["data"]["result"]
            return True if not missing and moved else (missing, bool(moved))
        prom_live.wait_for(recorded_after_traffic, 60, "recording rules / counters after traffic")

        prom_live.check_targets_up(prom, checker, targets)
        moved = [
            ('sum(increase(phi_gateway_requests_total{code="OK"}[2m]))', "gateway OK requests"),
            ('sum(increase(phi_gateway_requests_total{code="NOT_FOUND"}[2m]))', "gateway NOT_FOUND requests"),
            ('sum(increase(phi_grpc_server_requests_total{job="phi-gateway"}[2m]))', "gateway gRPC calls"),
            ('sum(increase(phi_grpc_server_requests_total{job="phi-tokenizer"}[2m]))', "tokenizer gRPC calls"),
            ('sum(increase(phi_grpc_server_requests_total{job="phi-worker",method="Generate"}[2m]))',
             "worker Generate calls"),
            ("sum(increase(phi_worker_generated_tokens_total[2m]))", "generated tokens"),
            ("sum(increase(phi_gateway_completion_tokens_total[2m]))", "completion tokens"),
            ('sum(increase(phi_tokenizer_tokens_total{direction="encode"}[2m]))', "encoded tokens"),
            ("sum(phi_gateway_time_to_first_token_seconds_count)", "gateway TTFT observations"),
            ("sum(phi_worker_time_to_first_token_seconds_count)", "worker TTFT observations"),
        ]

        def value(expr):
            res = prom.query(expr)["data"]["result"]
            return float(res[0]["value"][1]) if res else 0.0
        # Wait for the scrape that follows the second wave (1 s interval).
        try:
            prom_live.wait_for(lambda: all(value(e) > 0 for e, _ in moved) or
                               [w for e, w in moved if value(e) <= 0], 30, "counters did not move")
        except TimeoutError as e:
            print(e)
        for expr, what in moved:
            val = value(expr)
            checker.check(val > 0, f"{what} moved: {expr} = {val:g}")
        prom_live.check_rules_healthy(prom, checker)
        prom_live.check_recording_rules_produce(prom, checker, root)
        prom_live.check_dashboard_queries(
            prom, checker, root, allowed_empty={'ALERTS{alertname=~"Phi.*", alertstate="firing"}'})
        firing = prom.query('ALERTS{alertstate="firing"}')["data"]["result"]
        checker.check(not firing, f"no alert fires on a healthy stack: {[a['metric'] for a in firing]}")

        # A dead worker: its target goes down, its series go stale, and the group's readiness
        # (group:phi_worker_ready:min, which stands in `up == 0` for a missing rank) and the
        # gateway's ready groups drop to 0, the inputs of PhiWorkerGroupNotReady and
        # PhiGatewayNoHealthyWorkerGroups.
        worker = procs[1][1]
        worker.kill()
        worker.wait()

        def sees_dead_worker():
            ready = prom.query('group:phi_worker_ready:min{group="local"}')["data"]["result"]
            gw = prom.query("job:phi_gateway_worker_groups_ready:sum")["data"]["result"]
            up = prom.query('up{job="phi-worker"}')["data"]["result"]
            vals = [float(r[0]["value"][1]) if r else None for r in (ready, gw, up)]
            return True if vals == [0.0, 0.0, 0.0] else vals
        try:
            prom_live.wait_for(sees_dead_worker, 30, "dead worker not seen")
            checker.check(True, "killed worker: up, group readiness and gateway ready groups drop to 0")
        except TimeoutError as e:
            checker.check(False, f"killed worker: {e} ([group ready, gateway ready groups, up])")
    except Exception as e:
        logs = "\n".join(f"--- {n}\n{tail(log, 1500)}" for n, _, log in procs)
        checker.check(False, f"{type(e).__name__}: {e}\n{logs}\n{prom.log_text() if prom else ''}")
    finally:
        if prom:
            prom.stop()
        for _, p, _ in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    n = len(checker.failures)
    print(f"{'FAILED' if n else 'PASSED'}: {n} failure(s)")
    return 1 if n else 0


if __name__ == "__main__":
    sys.exit(main())
