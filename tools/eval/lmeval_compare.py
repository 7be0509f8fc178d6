"""Runs lm-evaluation-harness in-process, and compares two runs sample by sample.

Used by the equality test (tests/integration/eval/test_eval_equality.py) and bench/eval/run.py, in the
lm-eval venv (.venv-eval, tools/eval/ensure_venv.sh). Offline: data are local JSONL (local_tasks.py).
"""
import math
import os
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LL_TOL = 1e-3       # per-sample loglikelihood, absolute (the issue's bound)
METRIC_RTOL = 1e-4  # continuous metrics (perplexities, bits per byte); accuracies must be equal
CHAT_TASKS = ("phi_local_chat",)


def evaluate(model, model_args, tasks, include_path, chat=False, batch_size=1):
    """lm_eval.simple_evaluate with samples logged; returns (results dict, seconds)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    t0 = time.time()
    res = simple_evaluate(model=model, model_args=model_args, tasks=list(tasks), batch_size=batch_size,
                          log_samples=True, apply_chat_template=chat, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=include_path), random_seed=0,
                          numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
    return res, time.time() - t0


def hf_args(model_dir, max_length=2048):
    return {"pretrained": model_dir, "dtype": "float32", "device": "cpu", "max_length": max_length}


def api_args(http_url, model_name, model_dir, chat=False, concurrent=2, max_length=2048):
    """local-completions (token-id prompts, tokenized with the model folder's tokenizer) or
    local-chat-completions (messages; the gateway applies the ChatML template)."""
    if chat:
        return {"base_url": http_url + "/v1/chat/completions", "model": model_name, "num_concurrent": concurrent,
                "max_retries": 1, "timeout": 600, "max_length": max_length}
    return {"base_url": http_url + "/v1/completions", "model": model_name, "tokenizer": model_dir,
            "tokenizer_backend": "huggingface", "num_concurrent": concurrent, "max_retries": 1,
            "timeout": 600, "max_length": max_length}


def _num(v):
    return float(v) if isinstance(v, (int, float)) else None


def metrics_of(res, task):
    return {k.split(",")[0]: v for k, v in res["results"][task].items()
            if "," in k and not k.split(",")[0].endswith("_stderr") and _num(v) is not None}


def scored_tokens(tok, args):
    """Tokens a loglikelihood request scores: the continuation's, or a whole rolling document's."""
    if len(args) == 1 or not args[0]:
        return len(tok(args[-1], add_special_tokens=False)["input_ids"])
    ctx, cont = args[0], args[1]
    return (len(tok(ctx + cont, add_special_tokens=False)["input_ids"])
            - len(tok(ctx, add_special_tokens=False)["input_ids"]))


def compare_task(task, hf, api, tok=None):
    """Differences between two runs of one task. Returns (summary dict, list of problem strings).

    With `tok`, loglikelihood differences are also fitted as a constant per scored token (what a
    log-softmax over a different set of rows gives) and the residual after it is reported."""
    problems = []
    per_token = []  # (diff, tokens)
    hs = {s["doc_id"]: s for s in hf["samples"][task]}
    as_ = {s["doc_id"]: s for s in api["samples"][task]}
    if set(hs) != set(as_):
        problems.append(f"{task}: documents differ: hf {len(hs)}, api {len(as_)}")
    max_dll, n_ll, greedy_diff, text_diff, n_gen = 0.0, 0, 0, 0, 0
    examples = []
    for d in sorted(set(hs) & set(as_)):
        for i, (h, a) in enumerate(zip(hs[d]["filtered_resps"], as_[d]["filtered_resps"])):
            if isinstance(h, str) or isinstance(a, str):
                n_gen += 1
                if h != a:
                    text_diff += 1
                    if len(examples) < 3:
                        examples.append(f"doc {d}: hf {h!r} vs api {a!r}")
                continue
            if isinstance(h, (list, tuple)):   # loglikelihood: (ll, is_greedy)
                hl, hg = float(h[0]), bool(h[1])
                al, ag = float(a[0]), bool(a[1])
                if hg != ag:
                    greedy_diff += 1
            else:                              # loglikelihood_rolling: ll
                hl, al = float(h), float(a)
            n_ll += 1
            if tok is not None:
                per_token.append((al - hl, scored_tokens(tok, hs[d]["arguments"][i])))
            dll = abs(hl - al)
            if dll > max_dll:
                max_dll = dll
            if dll > LL_TOL and len(examples) < 3:
                examples.append(f"doc {d}: loglikelihood hf {hl:.6f} api {al:.6f} (diff {hl - al:+.6f})")
    fit = None
    if n_ll and max_dll > LL_TOL:
        problems.append(f"{task}: max |loglikelihood diff| {max_dll:.3g} > {LL_TOL} over {n_ll} requests")
        if per_token:
            c = sum(x for x, _ in per_token) / sum(n for _, n in per_token)
            resid = max(abs(x - c * n) for x, n in per_token)
            fit = (c, resid)
            problems.append(f"{task}:   api - hf = {c:+.6f} x scored tokens (over {sum(n for _, n in per_token)} tokens), "
                            f"max residual after that {resid:.2e}"
                            + ("  <- a constant per token: log-softmax over a different set of output rows"
                               if resid <= LL_TOL else ""))
    if greedy_diff:
        problems.append(f"{task}: is_greedy differs in {greedy_diff} of {n_ll} requests")
    if text_diff:
        problems.append(f"{task}: {text_diff} of {n_gen} generated strings differ")
    hm, am = metrics_of(hf, task), metrics_of(api, task)
    for k in sorted(set(hm) | set(am)):
        x, y = hm.get(k), am.get(k)
        if x is None or y is None:
            problems.append(f"{task}: metric {k} only on one side")
            continue
        exact = k in ("acc", "acc_norm", "exact_match")
        if (x != y) if exact else not math.isclose(x, y, rel_tol=METRIC_RTOL, abs_tol=1e-12):
            problems.append(f"{task}: metric {k} hf {x:.6g} vs api {y:.6g}")
    problems += [f"{task}:   {e}" for e in examples]
    return {"task": task, "ll_requests": n_ll, "max_dll": max_dll, "greedy_diff": greedy_diff,
            "generations": n_gen, "text_diff": text_diff, "hf_metrics": hm, "api_metrics": am,
            "per_token_fit": fit}, problems


def fmt_metrics(m):
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(m.items()))


def table(summaries):
    rows = ["| task | ll requests | max abs ll diff | is_greedy diffs | generations | strings differ | hf metrics | api metrics |",
            "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        rows.append(f"| {s['task']} | {s['ll_requests']} | {s['max_dll']:.2e} | {s['greedy_diff']} | {s['generations']} | "
                    f"{s['text_diff']} | {fmt_metrics(s['hf_metrics'])} | {fmt_metrics(s['api_metrics'])} |")
    return "\n".join(rows)
