#!/usr/bin/env python3
"""Writes lm-evaluation-harness tasks that need no download: YAMLs + JSONL made here, deterministically.

Data sets cannot be downloaded on the build machines, so `./phi eval --local`, the equality test
(tests/integration/eval) and the benchmark (bench/eval) run these instead of the card's tasks. One task
per kind of request that lm-eval sends, over seeded pseudo-English text:

  phi_local_mc    multiple_choice        loglikelihood of 4 continuations per question (acc, acc_norm);
                                         some contexts are ~1,600-1,900 tokens long (tiny tokenizer)
  phi_local_ppl   loglikelihood_rolling  rolling perplexity of a document (word/byte perplexity, bits per byte)
  phi_local_gen   generate_until         greedy completion, stop sequences "." and "\\n" (exact_match); some
                                         prompts are ~1,600-1,800 tokens long
  phi_local_chat  generate_until         an instruction answered through the chat template (run with
                                         --apply_chat_template / local-chat-completions), stop "\\n\\n"

Usage: local_tasks.py --out DIR [--scale test|bench] [--seed N]; then
  lm_eval --include_path DIR --tasks phi_local_mc,phi_local_ppl,...   (the group `phi_local` = all four)
The YAMLs name their data with absolute paths, so DIR can be anywhere; the output depends only on the flags.
"""

import argparse
import json
import os
import random

# Documents per task: (mc questions, ppl documents, gen prompts, chat prompts, long mc, long gen).
SCALES = {
    # The equality test: 96 + 12 loglikelihood requests, 20 generations, under a minute each way.
    "test": dict(mc=24, ppl=12, gen=12, chat=8, long_mc=3, long_gen=2),
    # bench/eval: 500 + 50 loglikelihood requests, 60 generations.
    "bench": dict(mc=125, ppl=50, gen=40, chat=20, long_mc=6, long_gen=4),
}

ONSETS = ["b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl", "ch", "sh"]
VOWELS = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
CODAS = ["", "", "n", "r", "s", "t", "l", "nd", "st", "ng"]
COMMON = ["the", "of", "and", "to", "in", "is", "that", "it", "for", "was", "on", "with", "as", "by", "this"]


class Text:
    def __init__(self, rng):
        self.rng = rng
        self.words = sorted({"".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                                     for _ in range(rng.randint(1, 3))) for _ in range(400)})

    def word(self):
        return self.rng.choice(COMMON) if self.rng.random() < 0.35 else self.rng.choice(self.words)

    def sentence(self, lo=5, hi=14):
        w = [self.word() for _ in range(self.rng.randint(lo, hi))]
        w[0] = w[0].capitalize()
        return " ".join(w) + self.rng.choice([".", ".", ".", "?", "!"])

    def paragraph(self, words):
        out, n = [], 0
        while n < words:
            s = self.sentence()
            out.append(s)
            n += s.count(" ") + 1
        # Paragraph breaks now and then: rolling windows and stop sequences see newlines.
        text = ""
        for i, s in enumerate(out):
            text += s + ("\n" if self.rng.random() < 0.15 and i + 1 < len(out) else " ")
        return text.strip()


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def task_yaml(name, data, body):
    return (f"task: {name}\ntag: phi_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {json.dumps(data)}\ntest_split: test\n{body}\nmetadata:\n  version: 1.0\n")


MC = """output_type: multiple_choice
doc_to_text: "{{context}}\\nQuestion: which words come next?\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true"""

PPL = """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte"""

GEN = """output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: [".", "\\n"]
  max_gen_toks: 24
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true"""

CHAT = """output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 32
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--scale", choices=sorted(SCALES), default="test")
    p.add_argument("--seed", type=int, default=20)
    a = p.parse_args(argv)
    n = SCALES[a.scale]
    rng = random.Random(a.seed)
    t = Text(rng)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)

    mc = []
    for i in range(n["mc"]):
        # Long contexts first so that --limit keeps some; ~540-600 words ~ 1,600-1,900 tokens (tiny tokenizer).
        words = rng.randint(540, 600) if i < n["long_mc"] else rng.randint(15, 150)
        choices = [" " + " ".join(t.word() for _ in range(rng.randint(1, 4))) for _ in range(4)]
        mc.append({"context": t.paragraph(words), "choices": choices, "label": rng.randrange(4)})
    ppl = [{"text": t.paragraph(rng.randint(10, 80))} for _ in range(n["ppl"])]
    gen = []
    for i in range(n["gen"]):
        words = rng.randint(530, 580) if i < n["long_gen"] else rng.randint(10, 120)
        gen.append({"prompt": t.paragraph(words) + " " + " ".join(t.word() for _ in range(3)),
                    "answer": " ".join(t.word() for _ in range(rng.randint(1, 3)))})
    chat = [{"question": f"Write one sentence that uses the words \"{t.word()}\" and \"{t.word()}\". "
                         + t.sentence(), "answer": t.sentence()} for _ in range(n["chat"])]

    for name, rows, body in (("phi_local_mc", mc, MC), ("phi_local_ppl", ppl, PPL),
                             ("phi_local_gen", gen, GEN), ("phi_local_chat", chat, CHAT)):
        data = os.path.join(out, name + ".jsonl")
        write_jsonl(data, rows)
        with open(os.path.join(out, name + ".yaml"), "w") as f:
            f.write(task_yaml(name, data, body))
    print(out)


if __name__ == "__main__":
    main()
