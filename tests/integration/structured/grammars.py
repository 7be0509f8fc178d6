"""EBNF grammars (xgrammar's GBNF dialect, start rule `root`), regexes and choice lists for the
structured-output tests, each with an independent checker of the language it describes: the
recursive grammars by recursive descent, the regular ones by Python's re. Nesting and repetition
are bounded, so that a random-weight model's output ends well within max_new_tokens."""
import re

ARITHMETIC = r"""
root   ::= expr
expr   ::= term (("+" | "-") term){0,3}
term   ::= factor (("*" | "/") factor){0,2}
factor ::= num | "(" inner ")"
inner  ::= num (("+" | "-" | "*" | "/") num){0,3}
num    ::= [0-9]{1,4}
"""

LISP_LIST = r"""
root  ::= list
list  ::= "(" elem (" " elem){0,3} ")"
elem  ::= atom | inner
inner ::= "(" atom (" " atom){0,3} ")"
atom  ::= [a-z]{1,5} | [0-9]{1,3} | "nil"
"""

KEY_VALUE = r"""
root  ::= line{1,4}
line  ::= key "=" value "\n"
key   ::= [a-z] [a-z0-9_]{0,7}
value ::= [0-9]{1,5} | "\"" [a-zA-Z ]{0,10} "\"" | "true" | "false"
"""


class _Parser:
    """Recursive descent over a string; `fail` raises ValueError with the position."""

    def __init__(self, text):
        self.s, self.i = text, 0

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def eat(self, ch):
        if self.peek() != ch:
            self.fail(f"expected {ch!r}")
        self.i += 1

    def run(self, span, lo, hi):
        """Consumes lo..hi characters of the class `span` (a string of allowed characters)."""
        start = self.i
        while self.i < len(self.s) and self.i - start < hi and self.s[self.i] in span:
            self.i += 1
        if self.i - start < lo:
            self.fail(f"expected {lo} of {span[:12]!r}...")

    def done(self):
        if self.i != len(self.s):
            self.fail("trailing text")

    def fail(self, what):
        raise ValueError(f"{what} at {self.i} in {self.s!r}")


DIGITS = "0123456789"
LOWER = "abcdefghijklmnopqrstuvwxyz"


def check_arithmetic(text):
    p = _Parser(text)

    def num():
        p.run(DIGITS, 1, 4)
        # A fifth digit would mean the grammar allowed more than {1,4}.
        if p.peek() and p.peek() in DIGITS:
            p.fail("number longer than 4 digits")

    def factor():
        if p.peek() == "(":
            p.eat("(")
            num()
            for _ in range(3):
                if p.peek() and p.peek() in "+-*/":
                    p.i += 1
                    num()
            p.eat(")")
        else:
            num()

    def term():
        factor()
        for _ in range(2):
            if p.peek() and p.peek() in "*/":
                p.i += 1
                factor()

    term()
    for _ in range(3):
        if p.peek() and p.peek() in "+-":
            p.i += 1
            term()
    p.done()


def check_lisp_list(text):
    p = _Parser(text)

    def atom():
        # "nil" is one of the [a-z]{1,5} words.
        if p.peek() and p.peek() in DIGITS:
            p.run(DIGITS, 1, 3)
        else:
            p.run(LOWER, 1, 5)
        if p.peek() and p.peek() in DIGITS + LOWER:
            p.fail("atom too long or mixed")

    def seq(item):
        p.eat("(")
        item()
        for _ in range(3):
            if p.peek() == " ":
                p.eat(" ")
                item()
        p.eat(")")

    def elem():
        if p.peek() == "(":
            seq(atom)
        else:
            atom()

    seq(elem)
    p.done()


_KV_LINE = re.compile(r'[a-z][a-z0-9_]{0,7}=([0-9]{1,5}|"[a-zA-Z ]{0,10}"|true|false)\n')


def check_key_value(text):
    lines = text.splitlines(keepends=True)
    if not 1 <= len(lines) <= 4:
        raise ValueError(f"{len(lines)} lines in {text!r}")
    for line in lines:
        if not _KV_LINE.fullmatch(line):
            raise ValueError(f"bad line {line!r}")


GRAMMARS = [("arithmetic", ARITHMETIC, check_arithmetic),
            ("lisp_list", LISP_LIST, check_lisp_list),
            ("key_value", KEY_VALUE, check_key_value)]

# (name, xgrammar regex, Python regex for the same language).
REGEXES = [
    ("date", r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"),
    ("email", r"[a-z]{1,10}(\.[a-z]{1,10})?@[a-z]{2,8}\.(com|org|io)", None),
    ("decimal", r"-?(0|[1-9]\d{0,5})(\.\d{1,4})?", r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,4})?"),
    ("alternation", r"(cat|dog|bird)s? (sat|ran)", None),
    ("phone", r"\(\d{3}\) \d{3}-\d{4}", r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"),
    ("ipv4", r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
     r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"),
    ("hex_or_word", r"0x[0-9a-fA-F]{1,8}|[A-Z][a-z]{0,6}", None),
]

# Python's \d matches any Unicode digit; the checkers spell [0-9] where the regex says \d.
REGEXES = [(name, rx, re.compile(py or rx)) for name, rx, py in REGEXES]

CHOICES = [
    ["yes", "no"],
    ["yes", "yes, definitely", "no", "n/a", "unknown"],  # one choice a prefix of another
    ["positive", "negative", "neutral", "mixed feelings about it"],
    ["naïve", "日本語", "emoji 😀", "plain"],
]
