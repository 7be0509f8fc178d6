#!/usr/bin/env python3
"""Ids of the gateway's ChatML segments equal apply_chat_template(tokenize=True).

Reads the segments written by chatml_conformance_test and encodes them the way
the tokenizer service does (special segments -> the token's id, text segments
-> plain-text encoding with no special-token parsing), with Hugging Face
`tokenizers` as the oracle. Exits 1 naming the first conversation that differs.

  check_segment_ids.py --tokenizer DIR --segments FILE
"""
import argparse
import json
import sys

from tokenizers import Tokenizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--segments", required=True)
    a = p.parse_args()
    tok = Tokenizer.from_file(a.tokenizer + "/tokenizer.json")
    convs = json.load(open(a.segments, encoding="utf-8"))
    if len(convs) < 100:
        print(f"only {len(convs)} conversations", file=sys.stderr)
        return 1
    for i, c in enumerate(convs):
        ids = []
        for s in c["segments"]:
            if "special" in s:
                tid = tok.token_to_id(s["special"])
                if tid is None:
                    print(f"conversation {i}: unknown special {s['special']}", file=sys.stderr)
                    return 1
                ids.append(tid)
            else:
                ids.extend(tok.encode(s["text"], add_special_tokens=False).ids)
        if ids != c["ids"]:
            print(f"conversation {i}: ids differ\n  segments {ids}\n  hf       {c['ids']}", file=sys.stderr)
            return 1
    print(f"{len(convs)} conversations: segment ids equal apply_chat_template ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
