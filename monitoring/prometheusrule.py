#!/usr/bin/env python3
"""Prints monitoring/rules/*.yml as one Prometheus Operator PrometheusRule object.

    python3 monitoring/prometheusrule.py [--name phi-serve] | kubectl -n phi-serve apply -f -

The rule files stay the single source (promtool checks and tests them); this only wraps
their groups. Output is JSON, which kubectl reads as YAML.
"""
import argparse
import json
import os
import sys

import yaml

RULE_FILES = ("recording.yml", "alerts.yml")


def build(name):
    here = os.path.dirname(os.path.abspath(__file__))
    groups = []
    for fn in RULE_FILES:
        with open(os.path.join(here, "rules", fn)) as f:
            groups += yaml.safe_load(f)["groups"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "phi-serve"}},
            "spec": {"groups": groups}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="phi-serve")
    args = ap.parse_args()
    json.dump(build(args.name), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
