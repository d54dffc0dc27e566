"""The tools' common exit: an OS error on a path (a read-only or full disk, a missing
permission, a file where a folder should be) is one line naming the path and exit status 2,
never a traceback. Every ``python -m`` tool ends with ``cli.run(main)``.

Libraries often raise such errors without a path (numpy, Pillow and LMDB writes on a full
disk: ``OSError(ENOSPC)``, or numpy's errno-less short write). A tool wraps the writing of
its outputs in ``with cli.writing(path):``, which puts ``path`` into any OSError that left
without one, so the line names what was being written."""
from __future__ import annotations

import argparse
import contextlib
import errno
import sys
from pathlib import Path


def os_error(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
    why = e.strerror or (str(e.args[0]) if e.args else type(e).__name__)   # errno-less: its message
    return f"error: {where}: {why}" if where else f"error: {why} (while writing or reading a file)"


def positive_int(text: str) -> int:
    """argparse type of counts, lengths, strides and intervals: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return v


def output_file(path) -> Path:
    """An output file's path, refused when something other than a regular file is there (a
    folder, or a device such as /dev/full that a rename would replace)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise OSError(errno.EEXIST, f"{kind}; name an output file", str(path))
    return path


@contextlib.contextmanager
def writing(path):
    """Name ``path`` (a file or the output folder) in an OSError raised inside without a path."""
    try:
        yield
    except OSError as e:
        if not e.filename:
            e.filename = str(path)
        raise


def run(main) -> None:
    try:
        rc = main()
    except OSError as e:
        if e.errno is None and not e.filename:
            raise
        print(os_error(e), file=sys.stderr)
        rc = 2
    sys.exit(rc)
