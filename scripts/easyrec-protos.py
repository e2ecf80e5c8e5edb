#!/usr/bin/env python3
"""Writes plec's built-in EasyRec schema (proto/easyrec/protos/*.proto) from
an EasyRec checkout's easy_rec/python/protos.

Only the facts are kept: syntax, package, imports, messages, fields (names,
numbers, labels, types, defaults), oneofs, maps, enums and options. The
comments and the original layout are dropped; each file is re-emitted token
by token in plec's own layout (one declaration per line, two-space indent),
with the imports moved under `easyrec/protos/`.

    scripts/easyrec-protos.py EASYREC_CHECKOUT [OUT_DIR]

OUT_DIR defaults to proto/easyrec/protos. Afterwards
`plec schema diff --schema easyrec --proto-path EASYREC_CHECKOUT` must say
that the two agree.
"""

import os
import re
import subprocess
import sys

SRC_PREFIX = "easy_rec/python/protos/"
DST_PREFIX = "easyrec/protos/"

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*|\.[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}\[\]<>()=;,:-])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokens(text, path):
    out = []
    pos = 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise SystemExit(f"{path}: cannot tokenize at byte {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind in ("space", "line_comment", "block_comment"):
            continue
        out.append(m.group())
    return out


NO_SPACE_BEFORE = {";", ",", "]", ">", ")"}
NO_SPACE_AFTER = {"[", "<", "("}


def join(statement):
    text = ""
    prev = None
    for tok in statement:
        if prev is None:
            text = tok
        elif tok in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER or (tok == "<" and prev == "map"):
            text += tok
        else:
            text += " " + tok
        prev = tok
    return text


def rewrite(tok):
    if tok.startswith('"' + SRC_PREFIX):
        return '"' + DST_PREFIX + tok[len(SRC_PREFIX) + 1:]
    return tok


def emit(toks, source_name, commit):
    lines = [
        f"// plec's EasyRec schema: the facts of {SRC_PREFIX}{source_name}",
        f"// (alibaba/EasyRec {commit}), written by scripts/easyrec-protos.py.",
        "",
    ]
    depth = 0
    statement = []
    header_done = False
    for tok in toks:
        tok = rewrite(tok)
        if tok == "{":
            statement.append(tok)
            if depth == 0 and lines[-1] != "":
                lines.append("")
            lines.append("  " * depth + join(statement))
            statement = []
            depth += 1
        elif tok == "}":
            if statement:
                lines.append("  " * depth + join(statement))
                statement = []
            depth -= 1
            lines.append("  " * depth + "}")
        elif tok == ";" and not statement:
            continue  # an empty statement (`};`) holds no fact
        elif tok == ";":
            statement.append(tok)
            line = join(statement)
            is_header = depth == 0 and statement[0] in ("syntax", "package", "import", "option")
            if depth == 0 and not is_header and lines[-1] != "":
                lines.append("")
            if is_header and statement[0] == "import" and not header_done:
                header_done = True
                lines.append("")
            lines.append("  " * depth + line)
            statement = []
        else:
            statement.append(tok)
    if statement or depth != 0:
        raise SystemExit(f"{source_name}: unbalanced braces or a statement without `;`")
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    checkout = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) > 2 else "proto/easyrec/protos"
    src = os.path.join(checkout, SRC_PREFIX)
    try:
        commit = subprocess.run(
            ["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = os.environ.get("EASYREC_COMMIT", "unknown commit")
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(n for n in os.listdir(src) if n.endswith(".proto"))
    for name in names:
        with open(os.path.join(src, name), encoding="utf-8") as f:
            text = f.read()
        out = emit(tokens(text, name), name, commit)
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(out)
    print(f"wrote {len(names)} files to {out_dir}")


if __name__ == "__main__":
    main()
