"""Caffe's own parser and net setup tried first in a child process (CPU mode), so that
whatever Caffe would abort on — a glog CHECK, LOG(FATAL), a crash — becomes one
PreflightError naming the file, the layer and the failed check in words, instead of
killing the program. The validator (models/validate.py) catches the common mistakes with
better messages first; this is the catch-all behind it.

    net(path, phase="TEST", weights=())    a net (and weights copied into it)
    solver(path)                           a solver with its train and test nets

The child is a fork of this process (pycaffe already loaded): about half a second for a
full-size V2V net. This Caffe logs no per-layer setup in release builds, so when a net
fails, the layer is found by setting up shorter and shorter prefixes of it (bisection).
"""
from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
from pathlib import Path

from google.protobuf import text_format

from models.engine import caffe, pb2


class PreflightError(ValueError):
    pass


def net(path, phase: str = "TEST", weights=()) -> None:
    """Raise PreflightError if Caffe cannot set up the net at ``path`` in ``phase`` or copy
    ``weights`` (caffemodels) into it. One child when all is well; more to find the cause."""
    def build(cf):
        n = cf.Net(str(path), getattr(cf, phase))
        for w in weights:
            n.copy_from(str(w))
    status, log = _child(build)
    if status:
        _diagnose(log, status, path, [(path, phase)], weights,
                  lambda cf: cf.Net(str(path), getattr(cf, phase)))


def solver(path, nets=(), weights=()) -> None:
    """Raise PreflightError if Caffe cannot start the solver at ``path`` (its ``nets``: the
    (net file, phase) pairs it names) with ``weights`` copied into its train net."""
    def build(cf):
        s = cf.get_solver(str(path))
        for w in weights:
            s.net.copy_from(str(w))
    status, log = _child(build)
    if status:
        _diagnose(log, status, path, nets, weights, lambda cf: cf.get_solver(str(path)))


def _diagnose(log: str, status: int, path, nets, weights, bare) -> None:
    """Which part failed: a net (and its layer), the solver or net itself, or a weights file."""
    for net_path, phase in nets:
        st, lg = _child(lambda cf, n=net_path, ph=phase: cf.Net(str(n), getattr(cf, ph)))
        if st:
            raise PreflightError(explain(lg, st, net_path, _failing_layer(net_path, phase)))
    st, lg = _child(bare)
    if st or not weights:
        raise PreflightError(explain(lg if st else log, st or status, path, None, "cannot start it"))
    raise PreflightError(explain(log, status, ",".join(map(str, weights)), None,
                                 f"cannot copy these weights into the net of {path}"))


def _child(build) -> tuple[int, str]:
    """Run ``build(pycaffe)`` in a forked child: (its wait status, its output)."""
    cf = caffe()
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return
        code = 0
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            cf.set_mode_cpu()
            build(cf)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(2, f"\nPYTHON-ERROR {type(e).__name__}: {e}\n".encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        log = f.read().decode(errors="replace")
    return os.waitpid(pid, 0)[1], log


def _failing_layer(path, phase: str) -> str | None:
    """The first layer whose prefix of the net Caffe cannot set up (None: not a layer's fault)."""
    try:
        npm = text_format.Parse(Path(path).read_text(), pb2().NetParameter())
    except (OSError, text_format.ParseError):
        return None
    names = [lp.name for lp in npm.layer]
    lo, hi = 1, len(names)           # the first `hi` layers fail; fewer than `lo` set up
    with tempfile.TemporaryDirectory() as tmp:
        def fails(k: int) -> bool:
            part = pb2().NetParameter()
            part.CopyFrom(npm)
            del part.layer[k:]
            f = Path(tmp) / f"prefix{k}.prototxt"
            f.write_text(text_format.MessageToString(part))
            return _child(lambda cf: cf.Net(str(f), getattr(cf, phase)))[0] != 0
        if not names or not fails(hi):
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fails(mid) else (mid + 1, hi)
    return f"'{names[lo - 1]}' ({npm.layer[lo - 1].type})"


CHECK_VS = re.compile(r"Check failed: (?P<cond>.+?) \((?P<a>[^()]*) vs\. (?P<b>[^()]*)\)(?: (?P<msg>.*))?$")
CHECK = re.compile(r"Check failed: (?P<cond>.*)$")


def explain(log: str, status: int, path, layer: str | None, what: str | None = None) -> str:
    """One line from the child's log and wait status: the file, the layer, what failed."""
    what = what or (f"cannot set up layer {layer}" if layer else "cannot set up the net")
    fatal = [ln for ln in log.splitlines() if re.match(r"^F\d{4,8} ", ln)]
    py = [ln for ln in log.splitlines() if ln.startswith("PYTHON-ERROR ")]
    if fatal:
        src, _, text = fatal[-1].partition("] ")
        m = CHECK_VS.match(text)
        if m:
            text = f"requires `{m['cond']}` ({m['a']} vs. {m['b']})" + (f": {m['msg']}" if m["msg"] else "")
        elif CHECK.match(text):
            text = f"requires `{CHECK.match(text)['cond']}`"
        return f"{path}: Caffe {what}: {text} [{src.split()[-1]}]"
    if py:
        return f"{path}: Caffe {what}: {py[-1][len('PYTHON-ERROR '):]}"
    if os.WIFSIGNALED(status):
        return f"{path}: Caffe {what}: it crashed ({signal.Signals(os.WTERMSIG(status)).name})"
    return f"{path}: Caffe {what} (exit status {os.WEXITSTATUS(status)})"
