"""Write every V2V prototxt (train_val, deploy, solver) into prototxt/.

    python -m models.generate            write them (and remove none)
    python -m models.generate --check    exit 1 listing files that differ from the generator
    python -m models.generate --list     the nets, their files and paper rows

The committed files are this generator's output; tests run --check so they cannot drift.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.paths import PROTOTXT
from models.v2v import VARIANTS, all_files


def check(out_dir: Path = PROTOTXT) -> list[str]:
    """Names of files that are missing or differ from the generator's output."""
    bad = []
    for name, text in all_files().items():
        p = out_dir / name
        if not p.exists():
            bad.append(f"{name} (missing)")
        elif p.read_text() != text:
            bad.append(f"{name} (differs)")
    return bad


def write(out_dir: Path = PROTOTXT) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in all_files().items():
        p = out_dir / name
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
            changed.append(name)
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if prototxt/ differs from the generator")
    ap.add_argument("--list", action="store_true", help="list the nets")
    ap.add_argument("--out", type=Path, default=PROTOTXT, help="output folder (default prototxt/)")
    a = ap.parse_args(argv)
    if a.list:
        for v in VARIANTS:
            print(f"{v.key:24s} {v.paper_row}\n{'':24s} {', '.join(v.files())}")
        return 0
    if a.check:
        bad = check(a.out)
        if bad:
            print("prototxt files out of sync with models/generate.py "
                  "(run `python -m models.generate`):", file=sys.stderr)
            for b in bad:
                print("  " + b, file=sys.stderr)
            return 1
        print(f"{len(all_files())} prototxt files in sync")
        return 0
    changed = write(a.out)
    print(f"wrote {len(changed)} of {len(all_files())} files into {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
