#!/usr/bin/env python3
"""`./phi eval`: EleutherAI lm-evaluation-harness against a running phi-serve gateway.

Loglikelihood tasks (multiple choice, perplexity) go through `local-completions` (POST
/v1/completions with echo + logprobs, token-id prompts tokenized with the model folder's tokenizer);
generation tasks through `local-chat-completions` with --apply_chat_template (POST
/v1/chat/completions: the gateway applies the ChatML template), as the model card's table was made.

  ./phi eval [--url http://127.0.0.1:8080] [--model-dir DIR] [--tasks ...] [--chat-tasks ...] [-- lm-eval flags]
  ./phi eval --local [--scale test|bench]   the offline tasks of tools/eval/local_tasks.py
  ./phi eval --backend hf --model-dir DIR    the same tasks on lm-eval's own transformers backend

Defaults are the card's tasks: mmlu, truthfulqa_mc2, winogrande (loglikelihood) and ifeval, gsm8k
(generation). Their data sets come from the Hugging Face Hub, so they run only where the Hub is
reachable (or with HF_DATASETS_CACHE holding them); on the build machines use --local.
Each lm-eval command is printed before it runs, so it can be rerun by hand.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CARD_LOGLIK = "mmlu,truthfulqa_mc2,winogrande"
CARD_CHAT = "ifeval,gsm8k"
LOCAL_LOGLIK = "phi_local_mc,phi_local_ppl,phi_local_gen"
LOCAL_CHAT = "phi_local_chat"


def default_model_dir():
    if os.environ.get("PHI_MODEL"):
        return os.environ["PHI_MODEL"]
    demo = os.path.join(os.path.expanduser("~"), ".cache", "phi-serve", "demo-model")
    return demo if os.path.exists(os.path.join(demo, "config.json")) else None


def served_model(url, api_key):
    req = urllib.request.Request(url.rstrip("/") + "/v1/models",
                                 headers={"Authorization": "Bearer " + api_key} if api_key else {})
    try:
        return json.load(urllib.request.urlopen(req, timeout=10))["data"][0]["id"]
    except Exception as e:  # noqa: BLE001 - any failure means: no gateway there
        sys.exit(f"phi eval: no phi-serve gateway answers GET {url}/v1/models ({e}); start one with ./phi up "
                 f"(its HTTP port, 8080 by default) or pass --url")


def model_args(d):
    return ",".join(f"{k}={v}" for k, v in d.items())


def main(argv=None):
    p = argparse.ArgumentParser(prog="phi eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--url", default=os.environ.get("PHI_HTTP_URL", "http://127.0.0.1:8080"),
                   help="the gateway's HTTP API (env PHI_HTTP_URL; default http://127.0.0.1:8080)")
    p.add_argument("--model-dir", default=default_model_dir(),
                   help="the served Hugging Face folder (its tokenizer splits context/continuation tokens; "
                        "env PHI_MODEL; default the ./phi up demo model when it exists); a Hub id also works online")
    p.add_argument("--tasks", help=f"loglikelihood tasks, via local-completions (default {CARD_LOGLIK}; '' for none)")
    p.add_argument("--chat-tasks", help=f"generation tasks, via local-chat-completions + --apply_chat_template "
                                        f"(default {CARD_CHAT}; '' for none)")
    p.add_argument("--local", action="store_true", help="run the offline local tasks (tools/eval/local_tasks.py)")
    p.add_argument("--scale", default="test", choices=["test", "bench"], help="size of the local tasks")
    p.add_argument("--backend", choices=["api", "hf"], default="api",
                   help="api: the gateway (default); hf: lm-eval's transformers backend on --model-dir (the reference)")
    p.add_argument("--num-concurrent", type=int, default=4, help="concurrent HTTP requests (default 4)")
    p.add_argument("--limit", help="lm-eval --limit (documents per task)")
    p.add_argument("--num-fewshot", help="lm-eval --num_fewshot (default: each task's)")
    p.add_argument("--output", default=None, help="lm-eval --output_path (results and per-sample logs); "
                                                  "default a new folder under /tmp")
    p.add_argument("--api-key", default=os.environ.get("PHI_API_KEY", ""), help="API key (env PHI_API_KEY)")
    p.add_argument("--dry-run", action="store_true", help="print the lm-eval commands, run nothing")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more lm-eval flags, passed as they are")
    a = p.parse_args(argv)
    extra = a.extra[1:] if a.extra[:1] == ["--"] else a.extra

    include = []
    if a.local:
        tasks_dir = tempfile.mkdtemp(prefix="phi-eval-tasks-")
        subprocess.run([sys.executable, os.path.join(HERE, "local_tasks.py"), "--out", tasks_dir, "--scale", a.scale],
                       check=True, stdout=subprocess.DEVNULL)
        include = ["--include_path", tasks_dir]
    loglik = a.tasks if a.tasks is not None else (LOCAL_LOGLIK if a.local else CARD_LOGLIK)
    chat = a.chat_tasks if a.chat_tasks is not None else (LOCAL_CHAT if a.local else CARD_CHAT)
    if not a.model_dir and (loglik or a.backend == "hf"):
        sys.exit("phi eval: --model-dir DIR is needed (the served model's folder: lm-eval tokenizes with it)")
    out = a.output or tempfile.mkdtemp(prefix="phi-eval-")
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.local:
        env.setdefault("HF_DATASETS_OFFLINE", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
    if a.api_key:
        env["OPENAI_API_KEY"] = a.api_key  # lm-eval's API models send it as the bearer token

    name = served_model(a.url, a.api_key) if a.backend == "api" and not a.dry_run else "MODEL"
    lm_eval = [os.path.join(os.path.dirname(sys.executable), "lm-eval"), "run"]
    common = include + ["--output_path", out, "--log_samples"]
    common += ["--limit", a.limit] if a.limit else []
    common += ["--num_fewshot", a.num_fewshot] if a.num_fewshot else []
    runs = []
    if a.backend == "hf":
        hf = model_args({"pretrained": a.model_dir, "dtype": "float32", "device": "cpu"})
        if loglik:
            runs.append(lm_eval + ["--model", "hf", "--model_args", hf, "--tasks", loglik] + common)
        if chat:
            runs.append(lm_eval + ["--model", "hf", "--model_args", hf, "--tasks", chat, "--apply_chat_template"] + common)
    else:
        url = a.url.rstrip("/")
        if loglik:
            runs.append(lm_eval + ["--model", "local-completions", "--model_args", model_args({
                "base_url": url + "/v1/completions", "model": name, "tokenizer": a.model_dir,
                "tokenizer_backend": "huggingface", "num_concurrent": a.num_concurrent, "max_retries": 3,
                "max_length": 2048}), "--tasks", loglik] + common)
        if chat:
            runs.append(lm_eval + ["--model", "local-chat-completions", "--model_args", model_args({
                "base_url": url + "/v1/chat/completions", "model": name, "num_concurrent": a.num_concurrent,
                "max_retries": 3, "max_length": 2048}), "--tasks", chat, "--apply_chat_template"] + common)
    rc = 0
    for cmd in runs:
        cmd = cmd + extra
        print("phi eval: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
        if not a.dry_run:
            rc = subprocess.call(cmd, env=env) or rc
    if not a.dry_run:
        print(f"phi eval: results and per-sample logs in {out}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
