"""One writer per folder (a database, a run folder): an advisory lock on ``<folder>/.writer.lock``
that the kernel drops when the holding process ends, so a crash never leaves it stuck."""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_NAME = ".writer.lock"


class LockError(ValueError):
    """Another live process writes this folder; the message names the folder and the holder."""


def hold(folder, what: str):
    """Take ``folder``'s writer lock or raise LockError. The lock lasts while the returned
    file stays open (close it to let go) and dies with the process."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "a process"
        f.close()
        raise LockError(f"{folder}: {holder} is writing this {what} now; wait for it to end, "
                        "or write somewhere else") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f
