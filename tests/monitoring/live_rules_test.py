#!/usr/bin/env python3
"""Real Prometheus against synthetic phi-serve exporters.

    live_rules_test.py REPO_ROOT [--prometheus PATH]

Three HTTP servers on loopback stand in for the gateway, tokenizer and worker /metrics
endpoints and serve every metric of monitoring/metrics.yml, with the labels the services use
and counters that grow with time. A real Prometheus (Debian's) scrapes them with the job names,
labels and rule files of monitoring/prometheus.yml. Then, through the HTTP API: every target
is up, every rule evaluates without error, every recording rule yields series, and every
dashboard query evaluates without error and returns data.

This proves the rules and dashboard are sound against a real Prometheus without needing the
services; tests/integration/monitoring does the same against the real processes.
"""
import argparse
import http.server
import os
import sys
import threading
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prom_live  # noqa: E402

BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
# Share of observations at or below each bucket bound (then +Inf = 1).
SHARES = [0.01, 0.03, 0.08, 0.2, 0.4, 0.6, 0.8, 0.97, 0.99, 0.995, 1.0]

# Per-service label sets for the labelled metrics; each entry: (labels, rate per second).
LABELS = {
    "phi_grpc_server_requests_total": {
        "gateway": [({"service": "phi.v1.ChatService", "method": "Chat", "code": "OK"}, 5),
                    ({"service": "phi.v1.ChatService", "method": "Chat", "code": "INTERNAL"}, 0.05)],
        "tokenizer": [({"service": "phi.v1.TokenizerService", "method": "Encode", "code": "OK"}, 10),
                      ({"service": "phi.v1.TokenizerService", "method": "DecodeStream", "code": "OK"}, 10),
                      ({"service": "phi.v1.TokenizerService", "method": "Encode", "code": "INTERNAL"}, 0.01)],
        "worker": [({"service": "phi.v1.WorkerService", "method": "Generate", "code": "OK"}, 10),
                   ({"service": "phi.v1.WorkerService", "method": "Generate", "code": "UNAVAILABLE"}, 0.02)],
    },
    "phi_grpc_server_request_duration_seconds": {
        "gateway": [({"service": "phi.v1.ChatService", "method": "Chat"}, 5)],
        "tokenizer": [({"service": "phi.v1.TokenizerService", "method": "Encode"}, 10)],
        "worker": [({"service": "phi.v1.WorkerService", "method": "Generate"}, 10)],
    },
    "phi_build_info": {s: [({"version": "0.1.0"}, 1)] for s in ("gateway", "tokenizer", "worker")},
    "phi_worker_requests_total": {"worker": [({"finish_reason": "stop"}, 8), ({"finish_reason": "length"}, 2)]},
    "phi_gateway_requests_total": {"gateway": [
        ({"route": "/v1/chat/completions", "code": "200"}, 4),
        ({"route": "/v1/chat/completions", "code": "500"}, 0.04),
        ({"route": "phi.v1.ChatService/Chat", "code": "OK"}, 5),
        ({"route": "phi.v1.ChatService/Chat", "code": "RESOURCE_EXHAUSTED"}, 0.1)]},
    "phi_gateway_worker_groups": {"gateway": [({"state": "ready"}, 1), ({"state": "not_ready"}, 0),
                                              ({"state": "unreachable"}, 0)]},
    "phi_tokenizer_tokens_total": {"tokenizer": [({"direction": "encode"}, 500), ({"direction": "decode"}, 300)]},
    "phi_tokenizer_bytes_total": {"tokenizer": [({"direction": "encode"}, 2000), ({"direction": "decode"}, 1200)]},
}
GAUGES = {"phi_worker_requests_waiting": 2, "phi_worker_requests_running": 6, "phi_worker_kv_blocks_used": 300,
          "phi_worker_kv_blocks_capacity": 1000, "phi_worker_ready": 1, "phi_gateway_requests_in_flight": 6,
          "process_resident_memory_bytes": 3e8, "process_open_fds": 42}
RATES = {"phi_worker_prompt_tokens_total": 400, "phi_worker_generated_tokens_total": 300,
         "phi_worker_cached_prompt_tokens_total": 100, "phi_worker_prefix_cache_queries_total": 25,
         "phi_worker_prefix_cache_hits_total": 6, "phi_worker_preemptions_total": 0.1,
         "phi_gateway_prompt_tokens_total": 400, "phi_gateway_completion_tokens_total": 300,
         "process_cpu_seconds_total": 0.5}


def fmt_labels(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def fmt_le(b):
    return ("%g" % b)


def exposition(service, catalogue, start):
    t = time.time() - start + 1.0
    lines = []
    for m in catalogue:
        if service not in m["services"]:
            continue
        name, typ = m["name"], m["type"]
        lines.append(f"# TYPE {name} {typ}")
        series = LABELS.get(name, {}).get(service, [({}, RATES.get(name, 3))])
        for labels, rate in series:
            if typ == "histogram":
                count = int(rate * t * 10)
                for b, share in zip(BUCKETS, SHARES):
                    lines.append(f"{name}_bucket{fmt_labels(dict(labels, le=fmt_le(b)))} {int(count * share)}")
                lines.append(f"{name}_bucket{fmt_labels(dict(labels, le='+Inf'))} {count}")
                lines.append(f"{name}_sum{fmt_labels(labels)} {count * 0.2:.3f}")
                lines.append(f"{name}_count{fmt_labels(labels)} {count}")
            elif typ == "counter":
                lines.append(f"{name}{fmt_labels(labels)} {rate * t:.3f}")
            elif name == "process_start_time_seconds":
                lines.append(f"{name} {start:.3f}")
            elif name in GAUGES:
                lines.append(f"{name}{fmt_labels(labels)} {GAUGES[name]}")
            else:
                lines.append(f"{name}{fmt_labels(labels)} {rate}")
    return "\n".join(lines) + "\n"


def serve(service, catalogue, start):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = exposition(service, catalogue, start).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--prometheus", default="prometheus")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    with open(os.path.join(root, "monitoring", "metrics.yml")) as f:
        catalogue = yaml.safe_load(f)["metrics"]

    start = time.time()
    servers = {s: serve(s, catalogue, start) for s in ("gateway", "tokenizer", "worker")}
    targets = {f"phi-{s}": f"127.0.0.1:{srv.server_address[1]}" for s, srv in servers.items()}
    prom = prom_live.Prometheus(prom_live.local_config(root, targets), args.prometheus)
    checker = prom_live.Checker()
    try:
        prom.wait_ready()
        names = prom_live.recording_rule_names(root)

        def all_recorded():
            missing = [n for n in names if not prom.query(n)["data"]["result"]]
            return True if not missing else missing
        prom_live.wait_for(all_recorded, 40, "recording rules did not all produce series")
        prom_live.check_targets_up(prom, checker, targets)
        prom_live.check_rules_healthy(prom, checker)
        prom_live.check_recording_rules_produce(prom, checker, root)
        # The alert annotation query is empty while nothing fires, as it should be here.
        prom_live.check_dashboard_queries(
            prom, checker, root, allowed_empty={'ALERTS{alertname=~"Phi.*", alertstate="firing"}'})
        moved = prom.query('increase(phi_gateway_requests_total[1m])')["data"]["result"]
        checker.check(moved and any(float(r["value"][1]) > 0 for r in moved), "request counters moved")
        firing = prom.query('ALERTS{alertstate="firing"}')["data"]["result"]
        checker.check(not firing, f"no alert fires for a healthy synthetic stack: {firing}")
    except Exception as e:  # a timeout or a dead Prometheus is a failure, with its log
        checker.check(False, f"{type(e).__name__}: {e}\n{prom.log_text()}")
    finally:
        prom.stop()
        for srv in servers.values():
            srv.shutdown()
    n = len(checker.failures)
    print(f"{'FAILED' if n else 'PASSED'}: {n} failure(s)")
    return 1 if n else 0


if __name__ == "__main__":
    sys.exit(main())
