"""A tiny prototxt writer: layers and solvers as Python data, rendered as text.

It needs no engine (so ``python -m models.generate --check`` runs anywhere) and its
output is deterministic. Values: ``Enum("MAX")`` prints bare, str prints quoted, bool
prints true/false, dict is a nested message, list repeats the field.
"""
from __future__ import annotations

import json


class Enum(str):
    """An enum value: printed without quotes."""


def _scalar(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        s = format(v, ".10g")
        return s if any(c in s for c in ".e") else s + ".0"
    if isinstance(v, str):
        if "'" not in v:
            return "'" + v + "'" if '"' in v else '"' + v + '"'
        return json.dumps(v)
    raise TypeError(f"cannot write {v!r}")


def render_fields(fields: dict, indent: int = 1) -> list[str]:
    pad = "  " * indent
    out = []
    for k, v in fields.items():
        if v is None:
            continue
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, dict):
                inner = render_fields(item, indent + 1)
                if len(inner) <= 3 and sum(len(s) for s in inner) < 70:
                    out.append(f"{pad}{k} {{ " + " ".join(s.strip() for s in inner) + " }")
                else:
                    out.append(f"{pad}{k} {{")
                    out += inner
                    out.append(pad + "}")
            else:
                out.append(f"{pad}{k}: {_scalar(item)}")
    return out


class Layer:
    """One `layer { }` block."""

    def __init__(self, name, type_, bottom=(), top=(), **fields):
        self.name, self.type = name, type_
        self.bottom = [bottom] if isinstance(bottom, str) else list(bottom)
        self.top = [top] if isinstance(top, str) else list(top)
        self.fields = fields

    def render(self) -> str:
        head = {"name": self.name, "type": self.type, "bottom": self.bottom, "top": self.top}
        lines = ["layer {"] + render_fields(head) + render_fields(self.fields) + ["}"]
        return "\n".join(lines)


def comment(text: str) -> str:
    return "\n".join(("# " + s).rstrip() for s in text.strip("\n").splitlines())


def render_net(name: str, layers: list[Layer], header: str) -> str:
    parts = [comment(header), f'name: "{name}"'] + [layer.render() for layer in layers]
    return "\n".join(parts) + "\n"


def render_solver(fields: dict, header: str, notes: dict | None = None) -> str:
    """Solver text; ``notes`` maps a field name to an end-of-line comment."""
    notes = notes or {}
    lines = [comment(header)]
    for line in render_fields(fields, indent=0):
        key = line.split(":")[0].strip()
        lines.append(line + (f"  # {notes[key]}" if key in notes else ""))
    return "\n".join(lines) + "\n"
