#!/usr/bin/env python3
"""Golden ChatML renderings from Hugging Face (the oracle) for tests/conformance/chatml.

Makes a seeded set of conversations (multi-turn, unicode, empty system prompts,
whitespace-heavy and empty content, code), renders each with transformers'
apply_chat_template(add_generation_prompt=True) on a tokenizer folder made by
tools/make_tokenizer.py, and writes JSON: [{"messages": [...], "text": str, "ids": [int]}].

  gen_conversations.py --tokenizer DIR --out FILE [--count N] [--seed S]
"""
import argparse
import json
import random

from transformers import AutoTokenizer

PIECES = [
    "Hello", "world", "What is 2+2?", "def f(x):\n    return x * 2\n", "naïve café", "Ünïcödé",
    "日本語のテキスト", "中文测试", "😀🎉👩‍💻", "e\u0301", "עברית", "العربية", "Привет, мир",
    "  leading", "trailing  ", "\ttab\there", "a    b", "\n\n", "   ", "\t\t\t", "x" * 40,
    "<|im", "im_end|>", "<|", "|>", "<| im_end |>", "1,234.56", "C'est l'été", "don't", "I'm",
]
WS = [" ", "  ", "    ", "\t", "\n", "\r\n", " \n ", "\t \t", "        "]


def content(rng):
    kind = rng.random()
    if kind < 0.08:
        return ""
    if kind < 0.2:  # whitespace-heavy
        return "".join(rng.choice(WS + PIECES[:5]) for _ in range(rng.randint(1, 12)))
    parts = [rng.choice(PIECES) for _ in range(rng.randint(1, 8))]
    return "".join(p + rng.choice(["", " ", " ", "\n", "  "]) for p in parts)


def conversation(rng):
    msgs = []
    r = rng.random()
    if r < 0.2:
        msgs.append({"role": "system", "content": ""})  # empty system prompt
    elif r < 0.6:
        msgs.append({"role": "system", "content": content(rng)})
    turns = rng.randint(1, 6)
    for t in range(turns):
        msgs.append({"role": "user", "content": content(rng)})
        if t + 1 < turns or rng.random() < 0.1:
            msgs.append({"role": "assistant", "content": content(rng)})
    return msgs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=150)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    rng = random.Random(a.seed)
    specials = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}
    out = []
    while len(out) < a.count:
        msgs = conversation(rng)
        if any(s in m["content"] for m in msgs for s in specials):
            continue  # ids are compared only where content holds no special-token strings
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
        out.append({"messages": msgs, "text": text, "ids": list(ids)})
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print(f"wrote {len(out)} conversations to {a.out}")


if __name__ == "__main__":
    main()
