"""The tools' common exit: an OS error on a path (a read-only or full disk, a missing
permission, a file where a folder should be) is one line naming the path and exit status 2,
never a traceback. Every ``python -m`` tool ends with ``cli.run(main)``."""
from __future__ import annotations

import sys


def os_error(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
    return f"error: {where}: {e.strerror}" if where else f"error: {e.strerror} (while writing or reading a file)"


def run(main) -> None:
    try:
        rc = main()
    except OSError as e:
        if e.errno is None:
            raise
        print(os_error(e), file=sys.stderr)
        rc = 2
    sys.exit(rc)
