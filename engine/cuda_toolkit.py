"""The CUDA toolkit for the engine's CUDA build, from pinned NVIDIA wheels on PyPI.

No vendor apt repository and no system CUDA: nvcc, the CUDA runtime, cuBLAS, cuRAND and
NVRTC (which cuBLAS loads at run time) come from the same wheel family that PyTorch's CUDA
build uses, installed with ``pip install --target`` into the engine cache. All of them
unpack into one ``nvidia/cu13`` tree, which is a complete CUDA_HOME once the unversioned
library names the linker wants are added as links.

CUDA 13 binaries need an NVIDIA driver >= 580 on the GPU machine.
Stdlib only (imported by build_caffe.py before anything else is installed).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

CUDA_VERSION = "13.0"
WHEELS = (
    "nvidia-cuda-nvcc==13.0.88",      # nvcc, ptxas, fatbinary, nvlink
    "nvidia-nvvm==13.0.88",           # cicc (nvcc's device compiler)
    "nvidia-cuda-crt==13.0.88",       # nvcc's crt headers
    "nvidia-cuda-runtime==13.0.96",   # cudart and the runtime headers
    "nvidia-cuda-cccl==13.0.85",      # thrust / cub headers
    "nvidia-cublas==13.1.0.3",
    "nvidia-curand==10.4.0.35",
    "nvidia-cuda-nvrtc==13.0.88",     # loaded by cuBLAS at run time
)
MIN_DRIVER = 580  # CUDA 13.x needs an R580 driver or newer
# Default GPU code: A100 (sm_80) and H100/H200 (sm_90), plus sm_90 PTX that newer GPUs
# JIT-compile. nvcc 13 cannot target sm_70 (V100) any more.
DEFAULT_ARCH = ("-gencode arch=compute_80,code=sm_80 "
                "-gencode arch=compute_90,code=sm_90 "
                "-gencode arch=compute_90,code=compute_90")


def log(msg: str) -> None:
    print(f"[engine] {msg}", flush=True)


def toolkit_dir(cache: Path) -> Path:
    key = hashlib.sha256("\n".join(WHEELS).encode()).hexdigest()[:12]
    return cache / f"cuda-{CUDA_VERSION}-{key}"


def cuda_home(cache: Path) -> Path:
    return toolkit_dir(cache) / "nvidia" / "cu13"


def link_unversioned(lib: Path) -> None:
    """libfoo.so.13 -> libfoo.so, which is the name `-lfoo` looks for."""
    for so in sorted(lib.glob("lib*.so.*")):
        plain = lib / (so.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(so.name)


def ensure_toolkit(cache: Path, python: Path) -> Path:
    """Install the pinned wheels once (cached); return the CUDA_HOME."""
    top = toolkit_dir(cache)
    home = cuda_home(cache)
    if (top / ".complete").exists():
        return home
    log(f"installing the CUDA {CUDA_VERSION} toolkit from PyPI wheels into {top}")
    tmp = top.with_name(top.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    rc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--target",
                         str(tmp), *WHEELS]).returncode
    if rc != 0:
        print(f"[engine] ERROR: pip could not install the CUDA wheels ({', '.join(WHEELS)})",
              file=sys.stderr)
        sys.exit(1)
    link_unversioned(tmp / "nvidia" / "cu13" / "lib")
    nvcc = tmp / "nvidia" / "cu13" / "bin" / "nvcc"
    if not nvcc.exists():
        print(f"[engine] ERROR: {nvcc} missing after installing the wheels", file=sys.stderr)
        sys.exit(1)
    (tmp / ".complete").write_text("\n".join(WHEELS) + "\n")
    tmp.rename(top)
    return home
