"""The tools' common exit: an OS error on a path (a read-only or full disk, a missing
permission, a file where a folder should be) is one line naming the path and exit status 2,
never a traceback. Every ``python -m`` tool ends with ``cli.run(main)``.

Libraries often raise such errors without a path (numpy, Pillow and LMDB writes on a full
disk: ``OSError(ENOSPC)``, or numpy's errno-less short write). A tool wraps the writing of
its outputs in ``with cli.writing(path):``, which puts ``path`` into any OSError that left
without one, so the line names what was being written."""
from __future__ import annotations

import contextlib
import sys


def os_error(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
    why = e.strerror or (str(e.args[0]) if e.args else type(e).__name__)   # errno-less: its message
    return f"error: {where}: {why}" if where else f"error: {why} (while writing or reading a file)"


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
