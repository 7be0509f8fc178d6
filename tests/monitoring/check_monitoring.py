#!/usr/bin/env python3
"""Static checks of monitoring/: configs, rules, dashboard, metric names.

    check_monitoring.py REPO_ROOT [--promtool PATH]    # configs, rules, dashboard, names
    check_monitoring.py REPO_ROOT --docs               # docs/operations.md covers them all

Checks (each failure is printed; exit status 1 if any):
  * prometheus.yml passes `promtool check config` and scrapes the services' metrics ports;
  * prometheus-k8s.yml passes `promtool check config` (Debian's Prometheus is built without
    Kubernetes service discovery, so kubernetes_sd_configs is swapped for an empty static
    config first when promtool rejects it) and its relabelling, applied to sample pods,
    yields the labels the rules expect (job, group, rank);
  * every PromQL query of the Grafana dashboard parses (`promtool check rules`);
  * the dashboard JSON is what build_dashboard.py generates;
  * every metric that the rules and the dashboard read is in monitoring/metrics.yml or is
    a recording rule, and histograms are read through _bucket/_sum/_count;
  * docs/operations.md explains every catalogued metric and has a section for every alert.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print("FAIL:", msg)


def ok(msg):
    print("ok:  ", msg)


def promtool(args, tool):
    return subprocess.run([tool] + args, capture_output=True, text=True)


def check_local_config(root, tool):
    path = os.path.join(root, "monitoring", "prometheus.yml")
    r = promtool(["check", "config", path], tool)
    if r.returncode != 0:
        fail(f"promtool check config {path}:\n{r.stdout}{r.stderr}")
    else:
        ok("promtool check config monitoring/prometheus.yml")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    want = {"phi-gateway": "127.0.0.1:9090", "phi-tokenizer": "127.0.0.1:9091", "phi-worker": "127.0.0.1:9092"}
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    for job, target in want.items():
        targets = [t for sc in jobs.get(job, {}).get("static_configs", []) for t in sc["targets"]]
        if target not in targets:
            fail(f"prometheus.yml: job {job} does not scrape {target} (has {targets})")
    if any("service" in sc.get("labels", {}) for j in jobs.values() for sc in j.get("static_configs", [])):
        fail("prometheus.yml: no `service` target label (the services export their own)")
    worker_labels = [sc.get("labels", {}) for sc in jobs["phi-worker"]["static_configs"]]
    if not all("group" in lab for lab in worker_labels):
        fail("prometheus.yml: every phi-worker target needs a `group` label")
    ok("local scrape targets and labels")


def relabel(labels, configs):
    """Applies Prometheus relabel_configs (keep/drop/replace) to a label dict; None if dropped."""
    labels = dict(labels)
    for c in configs:
        action = c.get("action", "replace")
        sep = c.get("separator", ";")
        value = sep.join(labels.get(s, "") for s in c.get("source_labels", []))
        regex = re.compile("^(?:" + c.get("regex", "(.*)") + ")$")
        m = regex.match(value)
        if action == "keep":
            if not m:
                return None
        elif action == "drop":
            if m:
                return None
        elif action == "replace":
            if m:
                repl = re.sub(r"\$(\d+)", lambda g: m.group(int(g.group(1))) or "", c.get("replacement", "$1"))
                target = c["target_label"]
                if repl == "":
                    labels.pop(target, None)
                else:
                    labels[target] = repl
        else:
            raise ValueError(f"relabel action {action} not simulated")
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def check_k8s_config(root, tool):
    path = os.path.join(root, "monitoring", "prometheus-k8s.yml")
    with open(path) as f:
        text = f.read()
    cfg = yaml.safe_load(text)
    r = promtool(["check", "config", path], tool)
    if r.returncode != 0 and "kubernetes_sd_configs" in (r.stdout + r.stderr):
        # Same config without the discovery block: everything else (relabel regexes, rule
        # files) is still checked by promtool.
        for sc in cfg["scrape_configs"]:
            if sc.pop("kubernetes_sd_configs", None) is not None:
                sc["static_configs"] = [{"targets": []}]
        rules = [os.path.join(root, "monitoring", p) for p in cfg.get("rule_files", [])]
        cfg["rule_files"] = rules
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
            yaml.safe_dump(cfg, tmp)
        r = promtool(["check", "config", tmp.name], tool)
        os.unlink(tmp.name)
        note = " (kubernetes_sd_configs swapped out: this promtool lacks Kubernetes SD)"
        cfg = yaml.safe_load(text)
    else:
        note = ""
    if r.returncode != 0:
        fail(f"promtool check config {path}:\n{r.stdout}{r.stderr}")
    else:
        ok("promtool check config monitoring/prometheus-k8s.yml" + note)

    relabels = cfg["scrape_configs"][0]["relabel_configs"]
    pod = {
        "__address__": "10.0.0.7:9092",
        "__meta_kubernetes_namespace": "phi",
        "__meta_kubernetes_pod_name": "phi-worker-b-1",
        "__meta_kubernetes_pod_node_name": "gpu-node-3",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_container_port_name": "metrics",
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of": "phi-serve",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": "worker",
        "__meta_kubernetes_pod_label_phi_serve_group": "phi-worker-b",
        "__meta_kubernetes_pod_label_phi_serve_tp_size": "2",
        "__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index": "1",
    }
    got = relabel(pod, relabels)
    want = {"job": "phi-worker", "group": "phi-worker-b", "rank": "1",
            "namespace": "phi", "pod": "phi-worker-b-1", "node": "gpu-node-3"}
    if got is None or any(got.get(k) != v for k, v in want.items()):
        fail(f"prometheus-k8s.yml relabelling of a worker pod gave {got}, want {want}")
    # Services export their own `service` label (gRPC service, phi_build_info): a target
    # label of that name would rename theirs to exported_service and break the rules.
    if got and "service" in got:
        fail("prometheus-k8s.yml must not set a `service` target label")
    # TP=1: one StatefulSet of independent replicas, each pod a group of its own, rank 0.
    tp1 = dict(pod, **{"__meta_kubernetes_pod_label_phi_serve_group": "",
                       "__meta_kubernetes_pod_label_phi_serve_tp_size": "1",
                       "__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index": "3",
                       "__meta_kubernetes_pod_name": "phi-worker-3"})
    got = relabel(tp1, relabels)
    if got is None or got.get("group") != "phi-worker-3" or got.get("rank") != "0":
        fail(f"prometheus-k8s.yml relabelling of a TP=1 worker pod gave {got}")
    gw = dict(pod, **{"__meta_kubernetes_pod_label_app_kubernetes_io_component": "gateway",
                      "__meta_kubernetes_pod_label_phi_serve_group": "",
                      "__meta_kubernetes_pod_label_phi_serve_tp_size": "",
                      "__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index": "",
                      "__meta_kubernetes_pod_name": "phi-gateway-5d9c-xk2"})
    got = relabel(gw, relabels)
    if got is None or got.get("job") != "phi-gateway" or "group" in got or "rank" in got:
        fail(f"prometheus-k8s.yml relabelling of a gateway pod gave {got}")
    for name, change in [("grpc port", {"__meta_kubernetes_pod_container_port_name": "grpc"}),
                         ("other app", {"__meta_kubernetes_pod_label_app_kubernetes_io_part_of": "redis"}),
                         ("pending pod", {"__meta_kubernetes_pod_phase": "Pending"})]:
        if relabel(dict(pod, **change), relabels) is not None:
            fail(f"prometheus-k8s.yml keeps a target it should drop: {name}")
    ok("prometheus-k8s.yml relabelling of sample pods")


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


NAME_RE = re.compile(r"(?<![\w:.])([a-zA-Z_][\w]*:[\w:]*|phi_\w+|process_\w+|up|ALERTS)(?![\w(])")


def names_in(expr):
    return set(NAME_RE.findall(strip_strings(expr)))


def check_names(root, queries):
    with open(os.path.join(root, "monitoring", "metrics.yml")) as f:
        catalogue = {m["name"]: m for m in yaml.safe_load(f)["metrics"]}
    rule_exprs, recorded, alerts = [], set(), []
    for fn in ("recording.yml", "alerts.yml"):
        with open(os.path.join(root, "monitoring", "rules", fn)) as f:
            for g in yaml.safe_load(f)["groups"]:
                for r in g["rules"]:
                    rule_exprs.append((f"{fn}:{r.get('record') or r.get('alert')}", r["expr"]))
                    if "record" in r:
                        recorded.add(r["record"])
                    else:
                        alerts.append(r)
    known = set(recorded) | {"up", "ALERTS"}
    for name, m in catalogue.items():
        if m["type"] == "histogram":
            known |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            known.add(name)
    used = set()
    for where, expr in rule_exprs + [(f"dashboard:{q['panel']}", q["expr"]) for q in queries]:
        for n in names_in(expr):
            used.add(n)
            if n not in known:
                fail(f"{where} reads unknown metric {n}")
    ok(f"{len(used)} metric names used by rules and dashboard are all catalogued or recorded")
    return catalogue, alerts


def check_prometheusrule(root, tool):
    """monitoring/prometheusrule.py wraps exactly the rule files, and its groups pass promtool."""
    r = subprocess.run([sys.executable, os.path.join(root, "monitoring", "prometheusrule.py")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"prometheusrule.py: {r.stderr}")
        return
    obj = json.loads(r.stdout)
    want = []
    for fn in ("recording.yml", "alerts.yml"):
        with open(os.path.join(root, "monitoring", "rules", fn)) as f:
            want += yaml.safe_load(f)["groups"]
    if obj.get("kind") != "PrometheusRule" or obj["spec"]["groups"] != want:
        fail("prometheusrule.py does not carry exactly the groups of monitoring/rules")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
        json.dump({"groups": obj["spec"]["groups"]}, tmp)
    r = promtool(["check", "rules", tmp.name], tool)
    os.unlink(tmp.name)
    if r.returncode != 0:
        fail(f"PrometheusRule groups fail promtool:\n{r.stdout}{r.stderr}")
    else:
        ok(f"prometheusrule.py wraps {len(want)} rule groups")


def check_docs(root, catalogue, alerts):
    path = os.path.join(root, "docs", "operations.md")
    if not os.path.exists(path):
        fail("docs/operations.md is missing")
        return
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    for name in catalogue:
        if f"`{name}`" not in doc:
            fail(f"docs/operations.md does not explain metric `{name}`")
    # GitHub-style anchors of the headings.
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+\s+(.*)$", doc, re.M)}
    for a in alerts:
        runbook = a["annotations"].get("runbook", "")
        anchor = runbook.partition("#")[2]
        if not runbook.startswith("docs/operations.md#") or anchor not in anchors:
            fail(f"alert {a['alert']}: runbook {runbook!r} has no heading in docs/operations.md")
    ok(f"docs explain {len(catalogue)} metrics and {len(alerts)} alerts")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--docs", action="store_true", help="check only that the docs cover metrics and alerts")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    mon = os.path.join(root, "monitoring")
    if args.docs:
        catalogue, alerts = check_names(root, [])
        check_docs(root, catalogue, alerts)
        print(f"{'FAILED' if FAILURES else 'PASSED'}: {len(FAILURES)} failure(s)")
        return 1 if FAILURES else 0

    r = promtool(["check", "rules", os.path.join(mon, "rules", "recording.yml"),
                  os.path.join(mon, "rules", "alerts.yml")], args.promtool)
    if r.returncode != 0:
        fail(f"promtool check rules:\n{r.stdout}{r.stderr}")
    else:
        ok("promtool check rules monitoring/rules/*.yml")

    check_local_config(root, args.promtool)
    check_k8s_config(root, args.promtool)

    r = subprocess.run([sys.executable, os.path.join(mon, "grafana", "build_dashboard.py"), "--check"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"dashboard JSON out of date: {r.stderr.strip()}")
    else:
        ok("monitoring/grafana/phi-serve.json matches build_dashboard.py")

    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboard-queries.yml")
        r = subprocess.run([sys.executable, os.path.join(mon, "grafana", "extract_queries.py"),
                            os.path.join(mon, "grafana", "phi-serve.json"), "--promtool-rules", rules],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"extract_queries.py failed: {r.stderr}")
            queries = []
        else:
            queries = json.loads(r.stdout)
            r = promtool(["check", "rules", rules], args.promtool)
            if r.returncode != 0:
                fail(f"a dashboard query does not parse:\n{r.stdout}{r.stderr}")
            elif len(queries) < 20:
                fail(f"only {len(queries)} dashboard queries extracted")
            else:
                ok(f"{len(queries)} dashboard queries parse")

    check_names(root, queries)
    check_prometheusrule(root, args.promtool)

    print(f"{'FAILED' if FAILURES else 'PASSED'}: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
