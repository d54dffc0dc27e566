"""Is there a usable NVIDIA GPU here? Asked before Caffe is: Caffe's own answer to a GPU
request on a machine without one is a glog abort ("CUDA driver version is insufficient").

``probe()`` asks the NVIDIA driver (libcuda, through ctypes: no CUDA toolkit, no torch) how
many GPUs it sees and which CUDA version it supports. ``check_request(ids)`` turns a GPU
request (``-gpu 0``, ``-gpu all``, ``set_mode_gpu``) into a clear GpuUnavailable error when
it cannot be met. Nothing here needs pycaffe.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import lru_cache

# The CUDA engine is built with CUDA 13 (engine/cuda_toolkit.py; a test ties the two): its
# binaries need a driver that supports CUDA 13.0, i.e. an R580 driver or newer.
ENGINE_CUDA = (13, 0)
ENGINE_MIN_DRIVER = 580


class GpuUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class GpuStatus:
    count: int             # GPUs the driver sees (after CUDA_VISIBLE_DEVICES)
    driver_cuda: tuple[int, int] | None  # the CUDA version the driver supports
    reason: str            # why no GPU can be used; "" when count > 0 and the driver fits

    @property
    def usable(self) -> bool:
        return self.count > 0 and not self.reason


def _cu_error(lib, rc: int) -> str:
    name = ctypes.c_char_p()
    if lib.cuGetErrorName(rc, ctypes.byref(name)) == 0 and name.value:
        return name.value.decode()
    return f"CUDA error {rc}"


def _visible() -> str:
    v = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "" if v is None else f" (CUDA_VISIBLE_DEVICES={v!r})"


def _driver_status(lib) -> GpuStatus:
    version = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    cuda = (version.value // 1000, version.value % 1000 // 10)
    rc = lib.cuInit(0)
    if rc != 0:
        return GpuStatus(0, cuda, f"the NVIDIA driver found no usable GPU: cuInit gave "
                                  f"{_cu_error(lib, rc)}{_visible()}")
    count = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value == 0:
        return GpuStatus(0, cuda, f"no GPU is visible{_visible()}")
    if cuda < ENGINE_CUDA:
        return GpuStatus(count.value, cuda,
                         f"the NVIDIA driver supports CUDA {cuda[0]}.{cuda[1]}, but the engine "
                         f"is built with CUDA {ENGINE_CUDA[0]}.{ENGINE_CUDA[1]}: it needs a "
                         f"driver >= {ENGINE_MIN_DRIVER}")
    return GpuStatus(count.value, cuda, "")


@lru_cache(maxsize=1)
def probe() -> GpuStatus:
    """What the NVIDIA driver says (cached for the process)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return GpuStatus(0, None, "no NVIDIA driver on this machine (libcuda.so.1 not found)")
    return _driver_status(lib)


def torch_cuda_reason() -> str:
    """Why PyTorch cannot use a GPU here ("" when it can); torch is imported only here."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (make setup-torch)"
    return "" if torch.cuda.is_available() else f"PyTorch {torch.__version__} sees no CUDA GPU"


def parse_ids(spec: str) -> list[int] | None:
    """Caffe's -gpu value: "all" -> None (every visible GPU), "0,2" -> [0, 2]."""
    if spec.strip().lower() == "all":
        return None
    try:
        ids = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise GpuUnavailable(f"-gpu {spec}: expected GPU ids such as 0 or 0,1, or 'all'") from None
    if not ids or min(ids) < 0:
        raise GpuUnavailable(f"-gpu {spec}: expected GPU ids such as 0 or 0,1, or 'all'")
    return ids


def check_request(ids: list[int] | None, what: str) -> list[int]:
    """The GPU ids to use for a request (None: all), or GpuUnavailable saying why not."""
    st = probe()
    if not st.usable:
        raise GpuUnavailable(f"{what}: no usable GPU here: {st.reason}. "
                             f"Without a GPU request Caffe runs on the CPU.")
    if ids is None:
        return list(range(st.count))
    missing = [i for i in ids if i >= st.count]
    if missing:
        raise GpuUnavailable(f"{what}: GPU {missing[0]} does not exist; {st.count} GPU(s) "
                             f"visible{_visible()}")
    return ids
