"""Runs a real Prometheus on loopback and checks phi-serve's rules and dashboard against it.

Shared by live_rules_test.py (synthetic exporters that serve every catalogued metric) and the
integration test of the real stack. Only the Python standard library and PyYAML.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_config(root, targets, interval="1s"):
    """monitoring/prometheus.yml with its targets replaced ({job: "host:port"}) and a short
    scrape/evaluation interval; labels, job names and rule files are the real ones."""
    with open(os.path.join(root, "monitoring", "prometheus.yml")) as f:
        cfg = yaml.safe_load(f)
    cfg["global"]["scrape_interval"] = interval
    cfg["global"]["evaluation_interval"] = interval
    cfg["rule_files"] = [os.path.join(root, "monitoring", p) for p in cfg["rule_files"]]
    for sc in cfg["scrape_configs"]:
        job = sc["job_name"]
        if job not in targets:
            raise KeyError(f"no target given for job {job}")
        sc["static_configs"] = [dict(sc["static_configs"][0], targets=[targets[job]])]
    return cfg


class Prometheus:
    def __init__(self, config, binary="prometheus"):
        self.dir = tempfile.mkdtemp(prefix="phi-prom-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg_path = os.path.join(self.dir, "prometheus.yml")
        with open(cfg_path, "w") as f:
            yaml.safe_dump(config, f)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg_path}", f"--web.listen-address=127.0.0.1:{self.port}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_text()}")

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.dir, "prometheus.log")) as f:
            return f.read()[-4000:]

    def api(self, path, **params):
        url = self.url + "/api/v1/" + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 400/422 carry the error as JSON
            return json.load(e)

    def query(self, expr):
        return self.api("query", query=expr)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def recording_rule_names(root):
    with open(os.path.join(root, "monitoring", "rules", "recording.yml")) as f:
        return [r["record"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


def dashboard_queries(root):
    import importlib.util
    path = os.path.join(root, "monitoring", "grafana", "extract_queries.py")
    spec = importlib.util.spec_from_file_location("extract_queries", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(os.path.join(root, "monitoring", "grafana", "phi-serve.json")) as f:
        return mod.extract(json.load(f), dict(mod.DEFAULT_VARS))


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} (last: {last})")


class Checker:
    def __init__(self):
        self.failures = []

    def check(self, cond, msg):
        print(("ok:   " if cond else "FAIL: ") + msg)
        if not cond:
            self.failures.append(msg)
        return cond


def check_targets_up(prom, checker, jobs):
    res = prom.api("targets")
    active = res["data"]["activeTargets"]
    for job in jobs:
        ts = [t for t in active if t["labels"].get("job") == job]
        checker.check(ts and all(t["health"] == "up" for t in ts),
                      f"target(s) of {job} up: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in ts]}")


def check_rules_healthy(prom, checker):
    res = prom.api("rules")
    bad = [(r["name"], r.get("lastError")) for g in res["data"]["groups"] for r in g["rules"]
           if r.get("health") != "ok"]
    checker.check(not bad, f"every rule evaluates without error (bad: {bad})")


def check_recording_rules_produce(prom, checker, root, allowed_empty=()):
    names = recording_rule_names(root)
    empty = []
    for n in names:
        res = prom.query(n)
        if res.get("status") != "success" or not res["data"]["result"]:
            empty.append(n)
    unexpected = [n for n in empty if n not in allowed_empty]
    checker.check(not unexpected, f"{len(names) - len(empty)}/{len(names)} recording rules produce series "
                                  f"(empty, not allowed: {unexpected})")


def check_dashboard_queries(prom, checker, root, allowed_empty=(), settle_seconds=30):
    """Every panel query evaluates without error and (unless allowed) returns data.

    Empty results are retried for up to settle_seconds: a rule's series for one target
    appears only at the first evaluation after that target's second scrape, which can
    trail the other targets' by a rule interval.
    """
    queries = dashboard_queries(root)
    deadline = time.time() + settle_seconds
    while True:
        errors, empty = [], []
        for q in queries:
            res = prom.query(q["expr"])
            if res.get("status") != "success":
                errors.append((q["panel"], q["expr"], res.get("error")))
            elif not res["data"]["result"]:
                empty.append(q["expr"])
        unexpected = [e for e in empty if e not in allowed_empty]
        if errors or not unexpected or time.time() >= deadline:
            break
        time.sleep(1)
    checker.check(not errors, f"{len(queries)} dashboard queries evaluate without error (errors: {errors})")
    checker.check(not unexpected, f"dashboard queries with data: {len(queries) - len(empty)}/{len(queries)} "
                                  f"(empty, not allowed: {unexpected})")
