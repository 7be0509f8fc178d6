#!/usr/bin/env python3
"""Renders every kustomize overlay of deploy/k8s offline and validates what comes out.

    render_validate.py REPO_ROOT --kubectl PATH [--kubectl PATH ...] [--k8s-version 1.28.0 ...]

For each kubectl given (each carries its own kustomize: Debian 12's kubectl 1.20 has v2.0.3,
current ones v5), each overlay is rendered with `kubectl kustomize`, then:
  * every built-in object passes the Kubernetes OpenAPI schema of each --k8s-version in
    strict mode (unknown fields are errors), with the schemas shipped by the PyPI package
    kubernetes-validate; Prometheus Operator objects (not in those schemas) pass a schema of
    the fields we use, written below from the operator's API reference;
  * the objects fit together: references (ConfigMaps, Secrets, PVCs, Services of
    StatefulSets, HPA and monitor targets) resolve; Service, PDB, NetworkPolicy and monitor
    selectors select pods; ports match the services' flags; pods run as non-root with probes,
    preStop, requests and limits, and a grace period longer than preStop + drain;
  * GPU and TP facts per overlay (nvidia.com/gpu and --device=cuda, world size = replicas, rank/leader flags,
    groups selecting only their own pods, only the gateway reaching tokenizer and workers);
  * renderers agree: the objects rendered by every kubectl are identical.
"""
import argparse
import os
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

OVERLAYS = {"cpu-dev": {"gpu": False, "tp": 1}, "gpu": {"gpu": True, "tp": 1}, "gpu-tp2": {"gpu": True, "tp": 2}}
# Ports of the services (their --port / --metrics-port defaults in the deployment).
PORTS = {"gateway": {"grpc": 50051, "http": 8080, "metrics": 9090},
         "tokenizer": {"grpc": 50052, "metrics": 9091},
         "worker": {"grpc": 50053, "metrics": 9092, "rendezvous": 29500}}
# Objects the operator creates (docs/operations.md): referenced, not rendered.
EXTERNAL = {("Secret", "phi-api-keys")}
CLUSTER_SCOPED = {"Namespace"}

FAILURES = []


def fail(overlay, msg):
    FAILURES.append(f"[{overlay}] {msg}")
    print(f"FAIL: [{overlay}] {msg}")


# --- Prometheus Operator CRDs: the fields this repo uses, nothing else allowed. ---
_SELECTOR = {"type": "object", "additionalProperties": False,
             "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "matchExpressions": {"type": "array"}}}
_RELABEL = {"type": "object", "additionalProperties": False,
            "properties": {"sourceLabels": {"type": "array", "items": {"type": "string"}},
                           "separator": {"type": "string"}, "regex": {"type": "string"},
                           "targetLabel": {"type": "string"}, "replacement": {"type": "string"},
                           "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep",
                                               "hashmod", "lowercase", "uppercase"]}}}
_ENDPOINT = {"type": "object", "additionalProperties": False, "required": ["port"],
             "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "relabelings": {"type": "array", "items": _RELABEL},
                            "metricRelabelings": {"type": "array", "items": _RELABEL}}}
_META = {"type": "object", "required": ["name"],
         "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {"jobLabel": {"type": "string"}, "selector": _SELECTOR,
                           "namespaceSelector": {"type": "object"},
                           "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT}}}}},
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "podMetricsEndpoints"],
            "properties": {"jobLabel": {"type": "string"}, "selector": _SELECTOR,
                           "namespaceSelector": {"type": "object"},
                           "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT}}}}},
}


def render(kubectl, path):
    r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{kubectl} kustomize {path}: {r.stderr.strip()}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def validate_schema(overlay, objs, versions):
    for o in objs:
        key = (o.get("apiVersion"), o.get("kind"))
        name = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        if key in CRD_SCHEMAS:
            try:
                jsonschema.validate(o, CRD_SCHEMAS[key])
            except jsonschema.ValidationError as e:
                fail(overlay, f"{name}: {e.message} at {list(e.absolute_path)}")
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(overlay, f"{name} (Kubernetes {v}): {e.message} at {list(e.path)}")
            except kubernetes_validate.SchemaNotFoundError as e:
                fail(overlay, f"{name}: no schema for {key} in Kubernetes {v}: {e}")


def selects(selector, labels):
    """matchLabels semantics (the only form used here)."""
    ml = (selector or {}).get("matchLabels", selector if selector and "matchLabels" not in selector
                              and "matchExpressions" not in selector else {})
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def workloads(objs):
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def pod_labels(w):
    return w["spec"]["template"]["metadata"].get("labels", {})


def component(w):
    return pod_labels(w).get("app.kubernetes.io/component")


def arg_map(container):
    out = {}
    for a in container.get("args", []):
        k, _, v = a.partition("=")
        out[k.lstrip("-")] = v
    return out


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_consistency(overlay, objs, spec):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    names = {(o["kind"], o["metadata"]["name"]) for o in objs} | EXTERNAL
    ns = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    if len(ns) != 1:
        fail(overlay, f"expected one Namespace, got {ns}")
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") not in ns:
            fail(overlay, f"{o['kind']}/{o['metadata']['name']} is not in namespace {ns}")
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "phi-serve" \
                and o["kind"] not in CLUSTER_SCOPED:
            fail(overlay, f"{o['kind']}/{o['metadata']['name']} lacks label app.kubernetes.io/part-of=phi-serve")

    ws = workloads(objs)
    comps = {component(w) for w in ws}
    if comps != {"gateway", "tokenizer", "worker"}:
        fail(overlay, f"workload components {comps}")

    for w in ws:
        wname = f"{w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        if not selects(w["spec"]["selector"], pod_labels(w)):
            fail(overlay, f"{wname}: selector does not select its own pods")
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
            fail(overlay, f"{wname}: pods must run as a non-root user")
        comp = component(w)
        for c in pod["containers"]:
            cname = f"{wname}/{c['name']}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in c:
                    fail(overlay, f"{cname}: no {probe}")
            if "grpc" not in c.get("readinessProbe", {}):
                fail(overlay, f"{cname}: readiness must use gRPC health")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits", {}).get("memory"):
                fail(overlay, f"{cname}: needs resource requests and a memory limit")
            if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                fail(overlay, f"{cname}: allowPrivilegeEscalation must be false")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if ports != PORTS[comp]:
                fail(overlay, f"{cname}: ports {ports}, want {PORTS[comp]}")
            args = arg_map(c)
            if int(args.get("port", -1)) != PORTS[comp]["grpc"] or \
                    int(args.get("metrics-port", -1)) != PORTS[comp]["metrics"]:
                fail(overlay, f"{cname}: --port/--metrics-port {args} disagree with its ports")
            for probe in ("startupProbe", "readinessProbe"):
                if c.get(probe, {}).get("grpc", {}).get("port") not in (None, PORTS[comp]["grpc"]):
                    fail(overlay, f"{cname}: {probe} checks another port than gRPC")
            # Drain budget: preStop sleep + the service's own drain must fit the grace period.
            pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            sleep = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else None
            grace = float(env_map(c).get("PHI_SHUTDOWN_GRACE_SECONDS", {}).get("value", "nan"))
            tgp = pod.get("terminationGracePeriodSeconds", 30)
            if sleep is None:
                fail(overlay, f"{cname}: needs a preStop sleep so endpoints drop before SIGTERM")
            elif not sleep + grace < tgp:
                fail(overlay, f"{cname}: preStop {sleep}s + drain {grace}s must be < grace period {tgp}s")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name")
                if ref and ("ConfigMap", ref) not in names:
                    fail(overlay, f"{cname}: ConfigMap {ref} not rendered")
            gpus = res.get("limits", {}).get("nvidia.com/gpu")
            if comp == "worker":
                # A GPU is only used with --device=cuda (phi-worker defaults to the CPU).
                device = args.get("device") or env_map(c).get("PHI_DEVICE", {}).get("value", "cpu")
                if device != ("cuda" if spec["gpu"] else "cpu"):
                    fail(overlay, f"{cname}: --device {device} on a {'GPU' if spec['gpu'] else 'CPU'} worker")
                if spec["gpu"] and str(gpus) != "1":
                    fail(overlay, f"{cname}: a GPU worker needs limits nvidia.com/gpu: 1 (has {gpus})")
                if not spec["gpu"] and gpus is not None:
                    fail(overlay, f"{cname}: cpu-dev worker asks for GPUs")
            elif gpus is not None:
                fail(overlay, f"{cname}: only workers get GPUs")
        for v in pod.get("volumes", []):
            if "secret" in v and ("Secret", v["secret"]["secretName"]) not in names:
                fail(overlay, f"{wname}: Secret {v['secret']['secretName']} not rendered")
            if "persistentVolumeClaim" in v and \
                    ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) not in names:
                fail(overlay, f"{wname}: PVC {v['persistentVolumeClaim']['claimName']} not rendered")
            if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in names:
                fail(overlay, f"{wname}: ConfigMap {v['configMap']['name']} not rendered")

    def pods_selected(selector):
        return [w for w in ws if selects(selector, pod_labels(w))]

    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        chosen = [w for w in ws if all(pod_labels(w).get(k) == v for k, v in sel.items()
                                       if k != "apps.kubernetes.io/pod-index")] if sel else []
        if not chosen:
            fail(overlay, f"Service/{name} selects no pods")
        for p in svc["spec"]["ports"]:
            for w in chosen:
                cports = {cp["name"] for c in w["spec"]["template"]["spec"]["containers"] for cp in c["ports"]}
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in cports:
                    fail(overlay, f"Service/{name} port {p['name']}: {w['metadata']['name']} has no port "
                                  f"{p['targetPort']}")

    sts = by_kind.get("StatefulSet", {})
    for name, s in sts.items():
        gov = by_kind.get("Service", {}).get(s["spec"]["serviceName"])
        if gov is None:
            fail(overlay, f"StatefulSet/{name}: governing Service {s['spec']['serviceName']} not rendered")
        else:
            if gov["spec"].get("clusterIP") != "None" or not gov["spec"].get("publishNotReadyAddresses"):
                fail(overlay, f"Service/{gov['metadata']['name']}: must be headless and publish not-ready pods")
            if [w["metadata"]["name"] for w in ws if w["kind"] == "StatefulSet"
                    and all(pod_labels(w).get(k) == v for k, v in gov["spec"]["selector"].items())] != [name]:
                fail(overlay, f"Service/{gov['metadata']['name']} must select exactly the pods of {name}")
        if s["spec"].get("podManagementPolicy") != "Parallel":
            fail(overlay, f"StatefulSet/{name}: ranks must start in parallel")
        c = s["spec"]["template"]["spec"]["containers"][0]
        args, tp = arg_map(c), int(pod_labels(s).get("phi-serve/tp-size", "0"))
        if tp != spec["tp"] or int(args.get("world-size", 0)) != tp:
            fail(overlay, f"StatefulSet/{name}: tp-size label {tp}, --world-size {args.get('world-size')}, "
                          f"want {spec['tp']}")
        if tp == 1:
            if args.get("rank") != "0" or "leader" in args:
                fail(overlay, f"StatefulSet/{name}: TP=1 pods are rank 0 with no leader ({args})")
        else:
            if s["spec"]["replicas"] != tp:
                fail(overlay, f"StatefulSet/{name}: replicas {s['spec']['replicas']} != TP size {tp}")
            if pod_labels(s).get("phi-serve/group") != name:
                fail(overlay, f"StatefulSet/{name}: label phi-serve/group must be the StatefulSet name")
            env = env_map(c)
            rank_src = env.get("PHI_RANK", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if args.get("rank") != "$(PHI_RANK)" or \
                    rank_src != "metadata.labels['apps.kubernetes.io/pod-index']":
                fail(overlay, f"StatefulSet/{name}: rank must be the pod ordinal ({args.get('rank')}, {rank_src})")
            if args.get("leader") != "$(PHI_GROUP)-0.$(PHI_GROUP).$(POD_NAMESPACE).svc:29500" or \
                    "PHI_GROUP" not in env or "POD_NAMESPACE" not in env:
                fail(overlay, f"StatefulSet/{name}: leader address {args.get('leader')}")
            for other_name, other in sts.items():
                if other_name != name and selects(s["spec"]["selector"], pod_labels(other)):
                    fail(overlay, f"StatefulSet/{name} selects the pods of {other_name}")
    if spec["tp"] > 1 and len(sts) < 2:
        fail(overlay, f"expected several TP groups, got {list(sts)}")

    leader = by_kind.get("Service", {}).get("phi-worker-leader")
    if leader is None or leader["spec"].get("clusterIP") != "None":
        fail(overlay, "Service/phi-worker-leader must exist and be headless")
    else:
        has_index = "apps.kubernetes.io/pod-index" in leader["spec"]["selector"]
        if has_index != (spec["tp"] > 1):
            fail(overlay, f"phi-worker-leader selector {leader['spec']['selector']}: pod-index term only for TP>1")
    gw = by_kind["Deployment"]["phi-gateway"]["spec"]["template"]["spec"]["containers"][0]
    if arg_map(gw).get("workers") != "dns:///phi-worker-leader.$(POD_NAMESPACE).svc:50053" or \
            arg_map(gw).get("tokenizer") != "phi-tokenizer:50052":
        fail(overlay, f"gateway --workers/--tokenizer: {arg_map(gw)}")

    for kind in ("PodDisruptionBudget", "PodMonitor"):
        for name, o in by_kind.get(kind, {}).items():
            if not pods_selected(o["spec"]["selector"]):
                fail(overlay, f"{kind}/{name} selects no pods")
    # The PodMonitor must label worker targets as monitoring/prometheus-k8s.yml does.
    for name, o in by_kind.get("PodMonitor", {}).items():
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "monitoring"))
        from check_monitoring import relabel  # noqa: E402
        for w in pods_selected(o["spec"]["selector"]):
            lab = pod_labels(w)
            meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in lab.items()}
            meta["__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index"] = "1" if spec["tp"] > 1 else "0"
            meta["__meta_kubernetes_pod_name"] = w["metadata"]["name"] + "-" + meta[
                "__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index"]
            for ep in o["spec"]["podMetricsEndpoints"]:
                cfg = [{"source_labels": r.get("sourceLabels", []), "regex": r.get("regex", "(.*)"),
                        "target_label": r["targetLabel"], "replacement": r.get("replacement", "$1"),
                        "action": r.get("action", "replace")} for r in ep.get("relabelings", [])]
                got = relabel(meta, cfg)
                want_group = w["metadata"]["name"] if spec["tp"] > 1 else meta["__meta_kubernetes_pod_name"]
                want_rank = "1" if spec["tp"] > 1 else "0"
                if got.get("job") != "phi-worker" or got.get("group") != want_group or got.get("rank") != want_rank:
                    fail(overlay, f"PodMonitor/{name} labels a {w['metadata']['name']} pod {got}, want "
                                  f"group={want_group} rank={want_rank}")
    for name, o in by_kind.get("ServiceMonitor", {}).items():
        svcs = [s for s in by_kind.get("Service", {}).values()
                if selects(o["spec"]["selector"], s["metadata"].get("labels", {}))]
        if not svcs or any(e["port"] not in {p["name"] for s in svcs for p in s["spec"]["ports"]}
                           for e in o["spec"]["endpoints"]):
            fail(overlay, f"ServiceMonitor/{name} selects no Service with its port")
    for name, o in by_kind.get("HorizontalPodAutoscaler", {}).items():
        ref = o["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in names:
            fail(overlay, f"HPA/{name} targets missing {ref['kind']}/{ref['name']}")

    # Only the gateway reaches the tokenizer and workers on their gRPC ports.
    for name, np in by_kind.get("NetworkPolicy", {}).items():
        targets = pods_selected(np["spec"]["podSelector"])
        if not targets:
            fail(overlay, f"NetworkPolicy/{name} selects no pods")
            continue
        comp = component(targets[0])
        if comp in ("tokenizer", "worker"):
            for rule in np["spec"].get("ingress", []):
                ports = {p["port"] for p in rule.get("ports", [])}
                if rule.get("ports") and PORTS[comp]["grpc"] not in ports:
                    continue
                sources = rule.get("from", [])
                if not sources:
                    fail(overlay, f"NetworkPolicy/{name}: a rule lets anyone reach the {comp} gRPC port")
                for src in sources:
                    allowed = {component(w) for w in pods_selected(src.get("podSelector"))}
                    if "namespaceSelector" in src or not allowed <= {"gateway", comp}:
                        fail(overlay, f"NetworkPolicy/{name}: {src} may reach the {comp} gRPC port")
    covered = {component(pods_selected(np["spec"]["podSelector"])[0])
               for np in by_kind.get("NetworkPolicy", {}).values() if pods_selected(np["spec"]["podSelector"])}
    if not {"tokenizer", "worker"} <= covered:
        fail(overlay, f"NetworkPolicies cover only {covered}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--kubectl", action="append", required=True, help="a kubectl with `kustomize`")
    ap.add_argument("--k8s-version", action="append", default=None,
                    help="Kubernetes versions to validate against (default: 1.28.0 and the newest)")
    args = ap.parse_args()
    versions = args.k8s_version or ["1.28.0", kubernetes_validate.latest_version()]
    renders = {}
    for kubectl in args.kubectl:
        ver = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
        kver = re.search(r"Kustomize Version: (\S+)", ver)
        print(f"renderer: {kubectl} ({ver.splitlines()[0] if ver else '?'}; "
              f"kustomize {kver.group(1) if kver else 'built-in v2'})")
        for overlay, spec in OVERLAYS.items():
            path = os.path.join(args.root, "deploy", "k8s", "overlays", overlay)
            try:
                objs = render(kubectl, path)
            except RuntimeError as e:
                fail(overlay, str(e))
                continue
            n = len(FAILURES)
            validate_schema(overlay, objs, versions)
            check_consistency(overlay, objs, spec)
            print(f"{'ok:  ' if len(FAILURES) == n else 'FAIL:'} {overlay}: {len(objs)} objects "
                  f"({', '.join(sorted({o['kind'] for o in objs}))}); schemas {versions}")
            renders.setdefault(overlay, []).append((kubectl, objs))
    for overlay, rs in renders.items():
        def key(objs):
            # kustomize v2 leaves `annotations: {}` after a generator merge: same object.
            def norm(o):
                meta = {k: v for k, v in o["metadata"].items() if v != {}}
                return dict(o, metadata=meta)
            return sorted(yaml.safe_dump(norm(o), sort_keys=True) for o in objs)
        for kubectl, objs in rs[1:]:
            if key(objs) != key(rs[0][1]):
                fail(overlay, f"{kubectl} renders differently from {rs[0][0]}")
            else:
                print(f"ok:   {overlay}: {kubectl} and {rs[0][0]} render identical objects")
    print(f"{'FAILED' if FAILURES else 'PASSED'}: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
