"""The one door to the Caffe engine: every module reaches pycaffe through here.

``caffe()`` imports pycaffe (built by engine/setup.sh) with a clear message when it is
missing, and quiets glog unless V2V_CAFFE_VERBOSE=1. ``pb2()`` gives caffe_pb2.
``use_gpu(i)`` puts this thread's Caffe on GPU i, or raises GpuUnavailable saying why not
(CPU-only build, no driver, no GPU, a driver too old) instead of Caffe's glog abort.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache


# glog reads its settings when libcaffe loads, which can happen through any import of the
# caffe package (caffe_pb2 included): quiet it before anything imports it.
if os.environ.get("V2V_CAFFE_VERBOSE", "0") != "1":
    os.environ.setdefault("GLOG_minloglevel", "2")


class EngineMissing(RuntimeError):
    pass


@lru_cache(maxsize=1)
def caffe():
    try:
        import caffe as _caffe
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise EngineMissing(
            f"pycaffe cannot be imported ({e}). Run `make test` or `bash engine/setup.sh` "
            f"from the repo root, and use .venv/bin/python (this is {sys.executable})."
        ) from e
    # No set_mode_cpu() here: data layers import this module inside `caffe train -gpu`,
    # and Caffe's mode is per thread. CPU is Caffe's default; tools that care set it.
    return _caffe


@lru_cache(maxsize=1)
def pb2():
    try:
        from caffe.proto import caffe_pb2
    except ImportError as e:  # pragma: no cover
        raise EngineMissing(f"caffe_pb2 cannot be imported ({e}); run engine/setup.sh") from e
    return caffe_pb2


def layer_types() -> set[str]:
    """Layer types registered in the built engine."""
    return set(caffe().layer_type_list())


def engine_dir():
    """The engine build folder (the sdist tree that pycaffe was imported from)."""
    from pathlib import Path
    return Path(caffe().__file__).resolve().parent.parent.parent


def cuda_build() -> bool:
    """True when the engine was built with CUDA (Makefile.config has no CPU_ONLY)."""
    cfg = engine_dir() / "Makefile.config"
    return cfg.exists() and "CPU_ONLY := 1" not in cfg.read_text()


CPU_ONLY_REASON = ("this engine is the CPU-only build; build the CUDA engine with "
                   "`make setup-cuda` (or use the GPU docker image)")


def gpu_unavailable_reason() -> str:
    """Why Caffe cannot run on a GPU here ("" when it can)."""
    from models import gpu
    if not cuda_build():
        return CPU_ONLY_REASON
    return gpu.probe().reason


def check_gpu_ids(ids: list[int] | None, what: str) -> list[int]:
    """The GPU ids Caffe can use for a request (None: all), or GpuUnavailable saying why
    not: the CPU-only build, or what models.gpu finds."""
    from models import gpu
    if not cuda_build():
        raise gpu.GpuUnavailable(f"{what}: {CPU_ONLY_REASON}")
    return gpu.check_request(ids, what)


def use_gpu(device: int = 0):
    """Caffe on GPU `device` for this thread; returns the caffe module."""
    check_gpu_ids([device], f"GPU {device}")
    c = caffe()
    c.set_device(device)
    c.set_mode_gpu()
    return c
