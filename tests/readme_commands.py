"""The commands a user reads in our markdown files, as data for tests/test_readme.py.

A *step* is either a fenced ```bash block (run as one script, its lines in order) or one
command in backticks (a table cell or prose). One holding placeholders (``<net>``, ``[--weights W]``,
``S``, ``...``) is a *synopsis*: it is checked against the tool's ``--help``, not run.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

COMMAND_START = ("python -m ", "python -c ", "caffe ", "make ", "bash ", "source ", "docker ")
PLACEHOLDER = re.compile(r"<[^>]*>|\[|\]|\{|\}|\.\.\.|(?<![\w-])[A-Z]{1,6}(?![\w-])")
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`]+)`")


@dataclass
class Step:
    source: str          # "README.md:12"
    lines: list[str]     # shell lines, comments stripped
    synopsis: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def stage(self) -> int:
        """Order of execution: data first, then training, then what reads their results."""
        t = self.text
        if "data_prep." in t or "tools.convert_c3d" in t:
            return 0
        if "tools.train" in t:
            return 1
        if "caffe train" in t:
            return 2
        if "--tables" in t:
            return 4
        return 3

    def paths(self) -> list[str]:
        """Path-like arguments (a slash or a known file suffix), as written."""
        out = []
        for line in self.lines:
            for tok in shlex.split(line, comments=True):
                if tok.startswith("-") or "=" in tok or "://" in tok:
                    continue
                if "/" in tok or tok.endswith((".caffemodel", ".prototxt", ".npy", ".json")):
                    out.append(tok)
        return out


def _strip_comment(line: str) -> str:
    """A shell line without its ``# comment`` (a # that starts a word outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _blocks(text: str, name: str) -> list[Step]:
    steps = []
    for m in FENCE.finditer(text):
        lineno = text.count("\n", 0, m.start()) + 2
        lines = [_strip_comment(raw) for raw in m.group(1).splitlines()]
        lines = [x for x in lines if x]
        if lines:
            steps.append(Step(f"{name}:{lineno}", lines))
    return steps


def _inline(text: str, name: str) -> list[Step]:
    """Commands in backticks outside fenced blocks (table cells and prose)."""
    steps, fenced = [], False
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        for span in [] if fenced else SPAN.findall(line):
            if span.startswith(COMMAND_START):
                steps.append(Step(f"{name}:{lineno}", [span], bool(PLACEHOLDER.search(span))))
    return steps


def steps_of(md: Path, root: Path) -> list[Step]:
    text = md.read_text()
    name = str(md.relative_to(root))
    return _blocks(text, name) + _inline(text, name)
