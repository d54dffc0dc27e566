"""PyTorch runtime for the project's Caffe prototxts and caffemodels.

The prototxt and the caffemodel stay the single source of truth: this package builds a
``torch.nn.Module`` from a prototxt (deploy or train_val), loads a caffemodel into it,
writes trained weights back as a caffemodel that Caffe loads, and trains with Caffe's SGD
solver semantics (lr policies, momentum, weight decay, lr_mult/decay_mult, iter_size),
on CPU, one GPU, or several GPUs through torchrun + DDP.

    from torch_runtime import TorchNet, load_caffemodel, save_caffemodel
    net = TorchNet("prototxt/seg_v2v_deploy.prototxt", phase="TEST")
    load_caffemodel(net, "runs/seg_v2v/snapshots/seg_v2v_iter_100000.caffemodel")
    out = net({"data": clip})           # dict of output blobs, e.g. out["prob"]

See README.md next to this file. torch is an optional extra, pinned in
requirements-torch.txt (``make setup-torch`` or ``pip install torch==2.13.0``).
"""
from __future__ import annotations

TORCH_HINT = ("the PyTorch runtime needs torch: run `make setup-torch` or "
              "`.venv/bin/pip install torch==2.13.0` (pinned in requirements-torch.txt; an "
              "unpinned install pulls a multi-GB CUDA build)")


class TorchMissing(ImportError):
    pass


def require_torch():
    try:
        import torch
    except ImportError as e:
        raise TorchMissing(f"{TORCH_HINT} ({e})") from e
    return torch


require_torch()

from .net import TorchNet, UnsupportedLayer, read_net_param  # noqa: E402
from .caffemodel import load_caffemodel, save_caffemodel  # noqa: E402

__all__ = ["TorchNet", "UnsupportedLayer", "read_net_param", "load_caffemodel",
           "save_caffemodel", "require_torch", "TorchMissing", "TORCH_HINT"]
