#!/usr/bin/env python3
"""Wall time of a fixed lm-evaluation-harness run: through phi-serve vs lm-eval's `hf` backend.

The local tasks of tools/eval/local_tasks.py at --scale bench (500 multiple-choice
loglikelihood requests, 50 rolling-perplexity documents, 40 generations with stop sequences, 20
chat-templated generations; some prompts ~1,700 tokens), run
  - with `hf` (transformers on Debian's torch 1.13, f32, --torch-threads threads), and
  - with `local-completions` / `local-chat-completions` against phi-gateway on loopback (real
    phi-tokenizer, phi-worker --dtype f32 --threads W, phi-gateway; tests/integration/gateway/stack.py),
then compared per sample (tools/eval/lmeval_compare.py). Prints a Markdown table with the machine,
the command and the date. Run it in the lm-eval venv:

  tools/eval/python.sh bench/eval/run.py [--model DIR] [--build-dir build/release] [--worker-threads 2]
      [--torch-threads 2] [--concurrent 4] [--limit N] [--tasks phi_local_mc,...]

Without --model it makes the equality test's padded tiny model (tests/integration/eval/make_padded_model.py).
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "eval"))
import lmeval_compare as lc  # noqa: E402

ALL = ["phi_local_mc", "phi_local_ppl", "phi_local_gen", "phi_local_chat"]


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({model}), {mem} GiB, {platform.system()} {platform.release()}"


def load():
    return open("/proc/loadavg").read().split()[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: the padded tiny model, made in a temp folder)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build", "release"))
    p.add_argument("--worker-threads", type=int, default=2)
    p.add_argument("--worker-dtype", default="f32")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=4, help="lm-eval num_concurrent for the API runs")
    p.add_argument("--hf-batch-size", type=int, default=1)
    p.add_argument("--limit", type=int, help="documents per task (default: all)")
    p.add_argument("--tasks", default=",".join(ALL))
    p.add_argument("--gateway-args", default="", help="extra phi-gateway flags")
    a = p.parse_args()

    import torch
    torch.set_num_threads(a.torch_threads)
    b = a.build_dir
    os.environ.update({"PHI_TOKENIZER_BIN": f"{b}/services/tokenizer/service/phi-tokenizer",
                       "PHI_WORKER_BIN": f"{b}/services/worker/service/phi-worker",
                       "PHI_GATEWAY_BIN": f"{b}/services/gateway/phi-gateway",
                       "PHI_PROTO_PYTHON_DIR": f"{b}/proto/python"})
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "gateway"))
    from stack import Stack

    work = tempfile.mkdtemp(prefix="phi-eval-bench-")
    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(work, "hf-datasets"))
    model = a.model
    if not model:
        model = os.path.join(work, "model")
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "integration", "eval", "make_padded_model.py"),
                        "--out", model], check=True)
    os.environ["PHI_TEST_MODEL"] = model
    tasks_dir = os.path.join(work, "tasks")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval", "local_tasks.py"), "--out", tasks_dir,
                    "--scale", "bench"], check=True, stdout=subprocess.DEVNULL)
    tasks = a.tasks.split(",")
    loglik = [t for t in tasks if t not in lc.CHAT_TASKS]
    chat = [t for t in tasks if t in lc.CHAT_TASKS]
    if a.limit:
        for t in tasks:  # keep the first N documents (the long ones come first)
            path = os.path.join(tasks_dir, t + ".jsonl")
            rows = open(path).read().splitlines()[:a.limit]
            open(path, "w").write("\n".join(rows) + "\n")

    def run_all(kind, args_fn):
        res, secs = {}, {}
        if loglik:
            r, secs["loglik"] = lc.evaluate(kind[0], args_fn(False), loglik, tasks_dir,
                                            batch_size=a.hf_batch_size if kind[0] == "hf" else 1)
            res.update({"loglik": r})
        if chat:
            r, secs["chat"] = lc.evaluate(kind[1], args_fn(True), chat, tasks_dir, chat=True,
                                          batch_size=a.hf_batch_size if kind[0] == "hf" else 1)
            res.update({"chat": r})
        return res, secs

    loads = [load()]
    started = datetime.datetime.now(datetime.timezone.utc)
    stack = Stack(gateway_args=shlex.split(a.gateway_args),
                  worker_args=["--dtype", a.worker_dtype, "--threads", str(a.worker_threads)])
    try:
        url = f"http://127.0.0.1:{stack.http_port}"
        name = json.load(urllib.request.urlopen(url + "/v1/models", timeout=10))["data"][0]["id"]
        api, api_s = run_all(("local-completions", "local-chat-completions"),
                             lambda c: lc.api_args(url, name, model, chat=c, concurrent=a.concurrent))
    finally:
        stack.close()
    loads.append(load())
    hf, hf_s = run_all(("hf", "hf"), lambda c: lc.hf_args(model))
    loads.append(load())

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    summaries, problems = [], []
    for t in tasks:
        key = "chat" if t in lc.CHAT_TASKS else "loglik"
        s, pr = lc.compare_task(t, hf[key], api[key], tok)
        summaries.append(s)
        problems += pr
    n_ll = sum(s["ll_requests"] for s in summaries)
    n_gen = sum(s["generations"] for s in summaries)
    cfg = json.load(open(os.path.join(model, "config.json")))
    cmd = "tools/eval/python.sh bench/eval/run.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\n- Date: {started:%Y-%m-%d %H:%M} UTC; commit {commit}")
    print(f"- Machine: {machine()}; load average (1 min) before / between / after: {' / '.join(loads)}")
    print(f"- Command: `{cmd}`")
    print(f"- Model: {cfg.get('_name_or_path')} hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, "
          f"{cfg['vocab_size']} output rows (tokenizer {len(tok)} ids), {cfg.get('torch_dtype')}")
    per_task = ", ".join(f"{s['task']} {s['ll_requests'] or s['generations']}" for s in summaries)
    print(f"- Requests: {n_ll} loglikelihood, {n_gen} generations ({per_task})")
    print(f"- phi-serve: phi-worker --dtype {a.worker_dtype} --threads {a.worker_threads}, lm-eval num_concurrent {a.concurrent}; "
          f"hf: torch {torch.__version__} with {a.torch_threads} threads, batch size {a.hf_batch_size}\n")
    tot_api, tot_hf = sum(api_s.values()), sum(hf_s.values())
    print("| run | phi-serve (s) | hf (s) | hf / phi-serve |\n|---|---|---|---|")
    for k in hf_s:
        print(f"| {k} ({', '.join(loglik if k == 'loglik' else chat)}) | {api_s[k]:.1f} | {hf_s[k]:.1f} | {hf_s[k] / api_s[k]:.2f}x |")
    print(f"| total | {tot_api:.1f} | {tot_hf:.1f} | {tot_hf / tot_api:.2f}x |\n")
    print(lc.table(summaries))
    if problems:
        print("\nDifferences (per sample, tools/eval/lmeval_compare.py):")
        for x in problems:
            print("  " + x)


if __name__ == "__main__":
    main()
