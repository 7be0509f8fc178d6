#!/usr/bin/env python3
"""Writes the emulated build's copy of a CUDA source: the emulated built-ins first, then the
source itself, line for line (a `#line` directive keeps compiler and sanitizer messages on the
original file and line), with two checks the emulator cannot get from a macro:

- after each static `__shared__` declaration, `CUDA_EMU_STATIC_SHARED(name);` for each variable
  it declares: the first thread of every block to pass it fills the variable with 0x55, as the
  emulator does with dynamic shared memory, so a read before the block wrote it shows (a GPU
  gives whatever the SM held; a plain `thread_local` would give the previous block's values);
- at the top of each `__launch_bounds__(N, ...)` kernel's body, `CUDA_EMU_LAUNCH_BOUNDS(N);`,
  which fails a launch with more threads per block than N, as the driver does.

A `__shared__` line this script cannot read stops the build with its file and line, so no
declaration goes unchecked.

Usage: instrument_kernel_source.py SOURCE OUTPUT [INCLUDE_AS]
(INCLUDE_AS: the source's path as #line names it; default SOURCE.)
"""
import re
import sys

DEVICE_HEADER = '#include "tests/cuda_emu/cuda_emu_device.h"'
SHARED = re.compile(r"^(?P<before>.*?)__shared__\s+(?P<decl>[^;]*);(?P<rest>.*)$")
EXTERN = re.compile(r"\bextern\b")
ALIGN = re.compile(r"__align__\s*\(\s*\d+\s*\)")
LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\s*\(")
DECLARATOR = re.compile(r"(?P<name>[A-Za-z_]\w*)\s*(\[[^\]]*\]\s*)*$")


def split_top_level(text):
    """Splits `text` at the commas outside brackets, parentheses and template arguments."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "([<":
            depth += 1
        elif c in ")]>":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def shared_names(decl, where):
    """The variables a static `__shared__` declaration (without the keyword and `;`) declares."""
    pieces = split_top_level(ALIGN.sub(" ", decl))
    names = []
    for i, piece in enumerate(pieces):
        m = DECLARATOR.search(piece)
        # The first piece holds the type too: it needs something before the name.
        if m is None or (i == 0 and not piece[: m.start()].strip()):
            sys.exit(f"{where}: cannot read this __shared__ declaration: {decl!r}")
        names.append(m.group("name"))
    return names


def paren_argument(text, open_index, where):
    """The text between the parenthesis at `open_index` and its match."""
    depth = 0
    for i in range(open_index, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_index + 1 : i]
    sys.exit(f"{where}: __launch_bounds__( without its closing parenthesis on the same line")


def instrument(lines, path):
    out = []
    pending_bounds = None  # the bound of a kernel whose body has not opened yet
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        code = line.split("//", 1)[0]
        if "__shared__" in code and not EXTERN.search(code) and "#define" not in code:
            m = SHARED.match(line)
            if m is None or "__shared__" in m.group("rest").split("//", 1)[0]:
                sys.exit(f"{where}: a static __shared__ declaration must end on its line, "
                         f"one to a line: {line.strip()!r}")
            calls = "".join(f" CUDA_EMU_STATIC_SHARED({n});" for n in shared_names(m.group("decl"), where))
            line = f"{m.group('before')}__shared__ {m.group('decl')};{calls}{m.group('rest')}"
            code = line.split("//", 1)[0]
        bounds = LAUNCH_BOUNDS.search(code)
        if bounds is not None and "#define" not in code:
            pending_bounds = split_top_level(paren_argument(code, bounds.end() - 1, where))[0]
            search_from = bounds.end()
        else:
            search_from = 0
        if pending_bounds is not None:
            brace = line.find("{", search_from)
            if brace >= 0 and brace < len(code):
                line = f"{line[: brace + 1]} CUDA_EMU_LAUNCH_BOUNDS({pending_bounds});{line[brace + 1 :]}"
                pending_bounds = None
            elif ";" in code[search_from:]:
                pending_bounds = None  # a declaration without a body
        out.append(line)
    return out


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    source, output = sys.argv[1], sys.argv[2]
    include_as = sys.argv[3] if len(sys.argv) == 4 else source
    with open(source, encoding="utf-8") as f:
        lines = f.read().split("\n")
    body = instrument(lines, include_as)
    text = "\n".join([DEVICE_HEADER, f'#line 1 "{include_as}"'] + body)
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
