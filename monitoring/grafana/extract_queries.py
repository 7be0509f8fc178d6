#!/usr/bin/env python3
"""Prints every PromQL query of a Grafana dashboard, ready to send to Prometheus.

Walks all panels (rows and collapsed rows included) and annotations, and replaces Grafana's
template variables by values Prometheus accepts: $group -> .* (all groups), $__rate_interval
-> 1m, $__interval -> 15s, $__range -> 1h (override with --var NAME=VALUE).

    extract_queries.py phi-serve.json                 # JSON list of {panel, ref, expr}
    extract_queries.py phi-serve.json --promtool-rules out.yml
        # writes each query as a recording rule, so `promtool check rules out.yml` parses them

The integration test evaluates each query against a real Prometheus (/api/v1/query).
"""
import argparse
import json
import re
import sys

DEFAULT_VARS = {
    "group": ".*",
    "datasource": "prometheus",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}


def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise KeyError(f"unknown template variable ${name} in query: {expr}")
        return variables[name]
    # ${name} and $name forms; longest names first is implied by the \w+ match.
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def extract(dashboard, variables):
    out = []
    for p in walk_panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append({"panel": p.get("title", ""), "ref": t.get("refId", ""),
                            "expr": substitute(t["expr"], variables)})
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append({"panel": "annotation: " + a.get("name", ""), "ref": "",
                        "expr": substitute(a["expr"], variables)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dashboard")
    ap.add_argument("--var", action="append", default=[], help="NAME=VALUE for a template variable")
    ap.add_argument("--promtool-rules", help="write the queries as a rule file for promtool")
    args = ap.parse_args()
    variables = dict(DEFAULT_VARS)
    for v in args.var:
        name, _, value = v.partition("=")
        variables[name] = value
    with open(args.dashboard, encoding="utf-8") as f:
        queries = extract(json.load(f), variables)
    if args.promtool_rules:
        # JSON is valid YAML: no YAML library needed.
        rules = [{"record": f"dashboard:query:{i}", "expr": q["expr"]} for i, q in enumerate(queries)]
        with open(args.promtool_rules, "w", encoding="utf-8") as f:
            json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, indent=1)
    json.dump(queries, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
