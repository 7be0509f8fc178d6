#!/usr/bin/env python3
"""Builds monitoring/grafana/phi-serve.json, the Grafana dashboard of phi-serve.

The JSON is generated so that panels stay uniform (units, legends, layout) and reviews read
this file instead of 2,000 lines of JSON. Edit here, then run:

    python3 monitoring/grafana/build_dashboard.py            # rewrite phi-serve.json
    python3 monitoring/grafana/build_dashboard.py --check    # exit 1 if it is out of date

Panels read the recording rules of monitoring/rules/recording.yml where one exists (cheap,
and the same numbers the alerts see) and raw series with $__rate_interval otherwise.
Template variables: $datasource (a Prometheus data source) and $group (worker groups).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "phi-serve.json")

DS = {"type": "prometheus", "uid": "${datasource}"}
GROUP = 'group=~"$group"'


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping rows."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title):
        if self.x:
            self.y += self.row_h
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1
        self.x = 0
        self.row_h = 0

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0
        panel["id"] = self._id()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def targets(queries):
    out = []
    for i, (expr, legend) in enumerate(queries):
        out.append({"datasource": DS, "expr": expr, "legendFormat": legend,
                    "refId": chr(ord("A") + i), "range": True})
    return out


def timeseries(title, queries, unit, description, max_=None):
    defaults = {"unit": unit, "custom": {"fillOpacity": 10, "lineWidth": 1, "showPoints": "never"}}
    if max_ is not None:
        defaults["max"] = max_
        defaults["min"] = 0
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": targets(queries),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title, queries, unit, description, thresholds=None):
    steps = thresholds or [{"color": "green", "value": None}]
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": targets(queries),
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "auto"}}


RED_BELOW_1 = [{"color": "red", "value": None}, {"color": "green", "value": 1}]


def build():
    L = Layout()

    # --- Overview: what users feel, and whether anything is on fire.
    L.row("Overview")
    L.add(stat("Requests/s", [("sum(job:phi_gateway_requests:rate5m)", "")], "reqps",
               "Client requests finished per second, all gateways (5 min rate)."), 4, 4)
    L.add(stat("Error ratio", [("max(job:phi_gateway_request_errors:ratio_rate5m)", "")], "percentunit",
               "Share of client requests that ended with a server-side error (5 min).",
               [{"color": "green", "value": None}, {"color": "orange", "value": 0.01},
                {"color": "red", "value": 0.05}]), 4, 4)
    L.add(stat("TTFT p95", [("max(job:phi_gateway_time_to_first_token_seconds:p95)", "")], "s",
               "95th percentile time to first token as clients see it (5 min).",
               [{"color": "green", "value": None}, {"color": "orange", "value": 0.5},
                {"color": "red", "value": 1}]), 4, 4)
    L.add(stat("Tokens/s generated", [("sum(group:phi_worker_generated_tokens:rate5m)", "")], "none",
               "Tokens generated per second by all worker groups (5 min rate)."), 4, 4)
    L.add(stat("Ready worker groups", [("min(job:phi_gateway_worker_groups_ready:sum)", "")], "none",
               "Worker groups in the gateway's rotation (the gateway with the fewest).", RED_BELOW_1), 4, 4)
    L.add(stat("Firing alerts", [('count(ALERTS{alertname=~"Phi.*", alertstate="firing"}) or vector(0)', "")],
               "none", "phi-serve alerts firing now (see docs/operations.md, Alerts).",
               [{"color": "green", "value": None}, {"color": "red", "value": 1}]), 4, 4)
    L.add(timeseries("Client requests/s by route and status",
                     [("sum by (route, code) (route_code:phi_gateway_requests:rate5m)", "{{route}} {{code}}")],
                     "reqps", "Gateway requests finished per second, by route and status code."), 12, 8)
    L.add(timeseries("Time to first token (gateway)",
                     [("max(job:phi_gateway_time_to_first_token_seconds:p50)", "p50"),
                      ("max(job:phi_gateway_time_to_first_token_seconds:p95)", "p95"),
                      ("max(job:phi_gateway_time_to_first_token_seconds:p99)", "p99")],
                     "s", "Time from request arrival to the first text delta; the SLO is p99 <= 1 s."), 12, 8)
    L.add(timeseries("Inter-token latency (gateway)",
                     [("max(job:phi_gateway_inter_token_latency_seconds:p50)", "p50"),
                      ("max(job:phi_gateway_inter_token_latency_seconds:p95)", "p95"),
                      ("max(job:phi_gateway_inter_token_latency_seconds:p99)", "p99")],
                     "s", "Time between consecutive text deltas sent to a client."), 12, 8)
    L.add(timeseries("Tokens/s",
                     [("sum(job:phi_gateway_prompt_tokens:rate5m)", "prompt"),
                      ("sum(job:phi_gateway_completion_tokens:rate5m)", "completion")],
                     "none", "Prompt and completion tokens per second through the gateways."), 12, 8)
    L.add(timeseries("TTFT SLO miss ratio",
                     [("max(job:phi_gateway_ttft_slo_miss:ratio_rate5m)", "5m"),
                      ("max(job:phi_gateway_ttft_slo_miss:ratio_rate1h)", "1h"),
                      ("max(job:phi_gateway_ttft_slo_miss:ratio_rate6h)", "6h")],
                     "percentunit", "Share of requests whose first token took over 1 s; the budget is 1%."), 12, 8)
    L.add(timeseries("Worker group readiness",
                     [(f"group:phi_worker_ready:min{{{GROUP}}}", "{{group}}")],
                     "none", "1 when every rank of the group is up and ready, 0 otherwise.", max_=1), 12, 8)

    # --- Worker groups: one series per group; pick groups with $group.
    L.row("Worker groups")
    L.add(timeseries("Requests waiting", [(f"group:phi_worker_requests_waiting:max{{{GROUP}}}", "{{group}}")],
                     "none", "Requests queued in each group's scheduler, not yet running."), 8, 8)
    L.add(timeseries("Requests running", [(f"group:phi_worker_requests_running:max{{{GROUP}}}", "{{group}}")],
                     "none", "Requests in each group's running batch."), 8, 8)
    L.add(timeseries("KV cache usage", [(f"group:phi_worker_kv_usage:ratio{{{GROUP}}}", "{{group}}")],
                     "percentunit", "Share of KV blocks in use; above 95% requests wait and get preempted.",
                     max_=1), 8, 8)
    L.add(timeseries("Generated tokens/s", [(f"group:phi_worker_generated_tokens:rate5m{{{GROUP}}}", "{{group}}")],
                     "none", "Tokens generated per second by each group."), 8, 8)
    L.add(timeseries("Prompt tokens/s", [(f"group:phi_worker_prompt_tokens:rate5m{{{GROUP}}}", "{{group}}")],
                     "none", "Prompt tokens admitted per second by each group (cached ones included)."), 8, 8)
    L.add(timeseries("Prefix cache",
                     [(f"group:phi_worker_prefix_cache_hit:ratio_rate5m{{{GROUP}}}", "{{group}} block hit ratio"),
                      (f"group:phi_worker_cached_prompt_tokens:ratio_rate5m{{{GROUP}}}",
                       "{{group}} cached prompt tokens")],
                     "percentunit", "Prefix-cache block hit ratio and the share of prompt tokens served from it.",
                     max_=1), 8, 8)
    L.add(timeseries("Worker TTFT p95 / p99",
                     [(f"group:phi_worker_time_to_first_token_seconds:p95{{{GROUP}}}", "{{group}} p95"),
                      (f"group:phi_worker_time_to_first_token_seconds:p99{{{GROUP}}}", "{{group}} p99")],
                     "s", "Time to first token inside the worker (queue + prefill)."), 8, 8)
    L.add(timeseries("Worker inter-token latency p50 / p99",
                     [(f"group:phi_worker_inter_token_latency_seconds:p50{{{GROUP}}}", "{{group}} p50"),
                      (f"group:phi_worker_inter_token_latency_seconds:p99{{{GROUP}}}", "{{group}} p99")],
                     "s", "Time between two tokens of one request inside the worker."), 8, 8)
    L.add(timeseries("Queue time p95 / e2e p95",
                     [(f"group:phi_worker_queue_time_seconds:p95{{{GROUP}}}", "{{group}} queue p95"),
                      (f"group:phi_worker_e2e_latency_seconds:p95{{{GROUP}}}", "{{group}} e2e p95")],
                     "s", "Time waiting before the first scheduling, and whole-request time, inside the worker."),
          8, 8)
    L.add(timeseries("Engine step duration",
                     [(f"group:phi_worker_step_duration_seconds:p50{{{GROUP}}}", "{{group}} p50"),
                      (f"group:phi_worker_step_duration_seconds:p99{{{GROUP}}}", "{{group}} p99")],
                     "s", "One scheduler step: the batch's forward pass and sampling."), 8, 8)
    L.add(timeseries("Mean batch size", [(f"group:phi_worker_batch_size:mean_rate5m{{{GROUP}}}", "{{group}}")],
                     "none", "Sequences per engine step (5 min mean)."), 8, 8)
    L.add(timeseries("Preemptions/s", [(f"group:phi_worker_preemptions:rate5m{{{GROUP}}}", "{{group}}")],
                     "none", "Requests preempted per second for lack of KV blocks."), 8, 8)
    L.add(timeseries("Finished requests/s by reason",
                     [(f"group_reason:phi_worker_requests:rate5m{{{GROUP}}}", "{{group}} {{finish_reason}}")],
                     "reqps", "Requests finished per second by each group, by finish reason."), 12, 8)
    L.add(timeseries("Worker gRPC p99 by method",
                     [(f'job_method:phi_grpc_server_request_duration_seconds:p99{{job="phi-worker"}}',
                       "{{method}}")],
                     "s", "99th percentile duration of the worker's gRPC calls (streams: whole stream)."), 12, 8)

    # --- Gateway
    L.row("Gateway")
    L.add(timeseries("Error and rejection ratio",
                     [("job:phi_gateway_request_errors:ratio_rate5m", "{{job}} errors"),
                      ("job:phi_gateway_request_rejections:ratio_rate5m", "{{job}} rejected (429)")],
                     "percentunit", "Share of requests with server-side errors, and shed for load."), 8, 8)
    L.add(timeseries("Requests in flight", [("sum by (instance) (phi_gateway_requests_in_flight)", "{{instance}}")],
                     "none", "Client requests being served now, per gateway pod."), 8, 8)
    L.add(timeseries("Worker groups by state", [("sum by (state) (phi_gateway_worker_groups)", "{{state}}")],
                     "none", "Worker groups in and out of the gateways' rotation."), 8, 8)
    L.add(timeseries("End-to-end latency",
                     [("max(job:phi_gateway_e2e_latency_seconds:p50)", "p50"),
                      ("max(job:phi_gateway_e2e_latency_seconds:p99)", "p99")],
                     "s", "Whole-request time as clients see it."), 8, 8)
    L.add(timeseries("Tokenizer call duration p99",
                     [("max(job:phi_gateway_tokenizer_duration_seconds:p99)", "p99")],
                     "s", "The gateway's Encode calls to the tokenizer service."), 8, 8)
    L.add(timeseries("Gateway gRPC calls/s by method and code",
                     [('sum by (method, code) (rate(phi_grpc_server_requests_total{job="phi-gateway"}'
                       '[$__rate_interval]))', "{{method}} {{code}}")],
                     "reqps", "gRPC calls on phi.v1.ChatService (and health) per second."), 8, 8)

    # --- Tokenizer
    L.row("Tokenizer")
    L.add(timeseries("Tokens/s by direction", [("sum by (direction) (job_direction:phi_tokenizer_tokens:rate5m)",
                                                "{{direction}}")],
                     "none", "Tokens encoded and decoded per second."), 8, 8)
    L.add(timeseries("Bytes/s by direction", [("sum by (direction) (job_direction:phi_tokenizer_bytes:rate5m)",
                                               "{{direction}}")],
                     "Bps", "UTF-8 bytes encoded and decoded per second."), 8, 8)
    L.add(timeseries("Tokenizer gRPC p99 by method",
                     [('job_method:phi_grpc_server_request_duration_seconds:p99{job="phi-tokenizer"}', "{{method}}")],
                     "s", "99th percentile duration of Encode / Decode / DecodeStream."), 8, 8)
    L.add(timeseries("gRPC server error ratio", [("job:phi_grpc_server_errors:ratio_rate5m", "{{job}}")],
                     "percentunit", "Share of gRPC calls ending with a server-side code, per service."), 12, 8)
    L.add(timeseries("gRPC calls/s by service",
                     [("sum by (job, method) (job_method:phi_grpc_server_requests:rate5m)", "{{job}} {{method}}")],
                     "reqps", "gRPC calls completed per second, every service."), 12, 8)

    # --- Processes
    L.row("Processes")
    L.add(timeseries("Resident memory", [('process_resident_memory_bytes{job=~"phi-.*"}', "{{job}} {{instance}}")],
                     "bytes", "RSS of every phi-serve process."), 8, 8)
    L.add(timeseries("CPU", [('rate(process_cpu_seconds_total{job=~"phi-.*"}[$__rate_interval])',
                              "{{job}} {{instance}}")],
                     "percentunit", "CPU cores used by every phi-serve process (1 = one core)."), 8, 8)
    L.add(timeseries("Open file descriptors", [('process_open_fds{job=~"phi-.*"}', "{{job}} {{instance}}")],
                     "none", "Open descriptors, sockets included."), 8, 8)
    L.add(timeseries("Uptime", [('time() - process_start_time_seconds{job=~"phi-.*"}', "{{job}} {{instance}}")],
                     "s", "Seconds since each process started; a drop is a restart."), 12, 8)
    L.add(timeseries("Targets up", [('up{job=~"phi-.*"}', "{{job}} {{instance}}")],
                     "none", "1 when Prometheus scraped the target, 0 when it could not.", max_=1), 6, 8)
    L.add(stat("Versions", [('count by (job, version) (phi_build_info{job=~"phi-.*"})', "{{job}} {{version}}")],
               "none", "Processes per build version; more than one version per job means a rollout."), 6, 8)

    return {
        "title": "phi-serve",
        "uid": "phi-serve-overview",
        "description": "phi-serve: gateway, tokenizer and worker groups (generated by build_dashboard.py).",
        "tags": ["phi-serve", "llm"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "group", "label": "Worker group", "type": "query", "datasource": DS,
             "query": {"query": "label_values(phi_worker_ready, group)", "refId": "groups"},
             "definition": "label_values(phi_worker_ready, group)",
             "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1,
             "hide": 0},
        ]},
        "annotations": {"list": [
            {"name": "Alerts", "datasource": DS, "enable": True, "iconColor": "red",
             "expr": 'ALERTS{alertname=~"Phi.*", alertstate="firing"}', "titleFormat": "{{alertname}}",
             "textFormat": "{{group}} {{job}}", "step": "60s"},
        ]},
        "panels": L.panels,
    }


def render():
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if phi-serve.json differs from the generator")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    text = render()
    if args.check:
        with open(args.out, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{args.out} is out of date: run {sys.argv[0]}", file=sys.stderr)
                return 1
        print(f"{args.out} is up to date")
        return 0
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
