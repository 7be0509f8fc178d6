#!/usr/bin/env python3
"""lm-eval through phi-serve == lm-eval's `hf` backend, sample by sample, on a padded-vocabulary model.

Real processes on loopback (tests/integration/gateway/stack.py: phi-tokenizer,
phi-worker, phi-gateway) serve PHI_TEST_MODEL, a tiny random Phi whose output rows outnumber the
tokenizer's ids (make_padded_model.py). lm-evaluation-harness (.venv-eval) runs the local tasks of
tools/eval/local_tasks.py twice:
  - `hf` on the model folder (transformers, the reference), chat task with --apply_chat_template;
  - `local-completions` (POST /v1/completions: echo + logprobs for loglikelihoods, token-id
    prompts, stop sequences) and `local-chat-completions` with --apply_chat_template (POST
    /v1/chat/completions: the gateway's ChatML) against the gateway.
and requires, per task: every per-sample loglikelihood within 1e-3 (multiple choice: each choice;
rolling: each document), the same is_greedy flags, the same generated strings, the same metrics.
Some multiple-choice contexts and generation prompts are over 1,500 tokens (checked).

Env (CTest sets it): PHI_TOKENIZER_BIN, PHI_WORKER_BIN, PHI_GATEWAY_BIN, PHI_TEST_MODEL,
PHI_PROTO_PYTHON_DIR; PHI_EVAL_GATEWAY_ARGS (extra gateway flags, e.g. "--local-tokenizer DIR").
Exit 0 when everything is equal; 1 with a per-task report of what differs.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "gateway"))
sys.path.insert(0, os.path.join(ROOT, "tools", "eval"))

import lmeval_compare as lc  # noqa: E402
from stack import Stack  # noqa: E402

LONG = 1500
TASKS = ["phi_local_mc", "phi_local_ppl", "phi_local_gen"]
MC_PROMPT = "\nQuestion: which words come next?\nAnswer:"  # local_tasks.py's doc_to_text suffix


def add_greedy_choices(path, model, tok):
    """Every other question's right answer becomes the model's own greedy continuation (1-3 tokens),
    so that is_greedy is True for some requests (random text alone never is) and acc is not chance."""
    import torch
    rows = [json.loads(l) for l in open(path, encoding="utf-8")]
    for i, r in enumerate(rows):
        if i % 2:
            continue
        ids = tok(r["context"] + MC_PROMPT)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=1 + i % 3, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        text = tok.decode(out)
        # lm-eval sends " " + choice (target_delimiter): keep continuations that start with a space;
        # plain BPE tokens only (no added or special tokens).
        if text.startswith(" ") and all(t < tok.vocab_size for t in out):
            r["choices"][r["label"]] = text[1:]
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def diagnose(model, tok, samples, api_samples, n=3):
    """For a few loglikelihood requests: which log-softmax does the API's answer match, the one over
    all output rows (transformers) or the one over the tokenizer's ids only?"""
    import torch
    lines = []
    api = {s["doc_id"]: s for s in api_samples}
    for s in samples[:n]:
        args = s["arguments"][0]
        if len(args) == 1:  # rolling: the whole document after lm-eval's prefix token (bos, else eos)
            prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            doc = tok(args[0], add_special_tokens=False)["input_ids"]
            whole, k = [prefix] + doc, len(doc)
        else:
            ctx, cont = args[0], args[1]
            whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
            k = len(whole) - len(tok(ctx, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            lg = model(torch.tensor([whole])).logits[0].double()
        tgt = torch.tensor(whole[-k:])
        ll_all = torch.log_softmax(lg, -1)[-k - 1:-1].gather(1, tgt[:, None]).sum().item()
        ll_tok = torch.log_softmax(lg[:, :len(tok)], -1)[-k - 1:-1].gather(1, tgt[:, None]).sum().item()
        r = api[s["doc_id"]]["filtered_resps"][0]
        a = float(r[0] if isinstance(r, (list, tuple)) else r)
        lines.append(f"doc {s['doc_id']} ({k} tokens): api {a:.6f}; log-softmax over all {lg.shape[1]} rows {ll_all:.6f} "
                     f"(diff {a - ll_all:+.2e}); over the tokenizer's {len(tok)} ids {ll_tok:.6f} (diff {a - ll_tok:+.2e})")
    return lines


def long_prompts(res, task, tok):
    """Token counts of the longest request contexts of a task (as the hf backend encodes them)."""
    n = []
    for s in res["samples"][task]:
        ctx = s["arguments"][0][0]
        n.append(len(tok(ctx, add_special_tokens=False)["input_ids"]) + (
            len(tok(s["arguments"][0][1], add_special_tokens=False)["input_ids"]) if isinstance(s["arguments"][0][1], str) else 0))
    return sorted(n, reverse=True)


def main():
    import torch
    torch.set_num_threads(1)  # the worker gets one thread too; a 2-core box runs both sides in turn
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = os.environ["PHI_TEST_MODEL"]
    tok = AutoTokenizer.from_pretrained(model)
    ref = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32).eval()
    work = tempfile.mkdtemp(prefix="phi-eval-eq-")
    tasks_dir = os.path.join(work, "tasks")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval", "local_tasks.py"), "--out", tasks_dir,
                    "--scale", "test"], check=True, stdout=subprocess.DEVNULL)
    add_greedy_choices(os.path.join(tasks_dir, "phi_local_mc.jsonl"), ref, tok)
    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(work, "hf-datasets"))
    problems, summaries, timings = [], [], {}

    # The reference: transformers on the folder.
    hf, timings["hf"] = lc.evaluate("hf", lc.hf_args(model), TASKS, tasks_dir)
    hf_chat, timings["hf chat"] = lc.evaluate("hf", lc.hf_args(model), ["phi_local_chat"], tasks_dir, chat=True)
    for task in ("phi_local_mc", "phi_local_gen"):
        n = long_prompts(hf, task, tok)
        print(f"{task}: longest prompts {n[:4]} tokens")
        if n[0] < LONG:
            problems.append(f"{task}: no prompt of {LONG}+ tokens (longest {n[0]}): the test lost its long prompts")

    gateway_args = shlex.split(os.environ.get("PHI_EVAL_GATEWAY_ARGS", ""))
    # --dtype f32: the worker keeps the f32 weights (its default converts them to BF16), as the
    # hf backend computes in f32; --threads 1 (stack.py).
    stack = Stack(gateway_args=gateway_args, worker_args=["--dtype", "f32"])
    try:
        url = f"http://127.0.0.1:{stack.http_port}"
        name = json.load(urllib.request.urlopen(url + "/v1/models", timeout=10))["data"][0]["id"]
        print(f"gateway {url} serving {name!r}; gateway flags {gateway_args or '(defaults: tokenizer service)'}")
        for task in TASKS + ["phi_local_chat"]:
            chat = task in lc.CHAT_TASKS
            model_kind = "local-chat-completions" if chat else "local-completions"
            t0 = time.time()
            try:
                api, _ = lc.evaluate(model_kind, lc.api_args(url, name, model, chat=chat), [task], tasks_dir, chat=chat)
            except Exception as e:  # an HTTP error through lm-eval: report it, go on with the next task
                msg = str(e).strip().splitlines()
                problems.append(f"{task}: lm-eval via {model_kind} failed: {type(e).__name__}: "
                                f"{msg[-1][:400] if msg else ''}")
                traceback.print_exc(limit=3)
                continue
            timings[f"api {task}"] = time.time() - t0
            s, p = lc.compare_task(task, hf_chat if chat else hf, api, tok)
            summaries.append(s)
            problems += p
            if task in ("phi_local_mc", "phi_local_ppl") and s["max_dll"] > lc.LL_TOL:
                problems += [f"{task}:   transformers directly: {x}" for x in diagnose(ref, tok, hf["samples"][task], api["samples"][task])]
    finally:
        logs = {p.name: p.log.name for p in stack.procs}
        stack.close()

    print("\n" + lc.table(summaries))
    greedy = sum(1 for s in hf["samples"]["phi_local_mc"] for r in s["filtered_resps"] if r[1])
    print(f"phi_local_mc: {greedy} requests are greedy on the hf side")
    if greedy == 0:
        problems.append("phi_local_mc: no greedy continuation among the choices: is_greedy is not being tested")
    print("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if problems:
        print(f"\nFAIL: lm-eval through phi-serve differs from lm-eval's hf backend ({len(problems)} findings):")
        for p in problems:
            print("  " + p)
        print(f"service logs: {logs}")
        return 1
    print("\nPASS: every loglikelihood within 1e-3, same is_greedy flags, same generations, same metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
