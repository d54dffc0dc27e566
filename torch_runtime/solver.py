"""Caffe's SGD solver semantics in torch (SGDSolver / NesterovSolver, BVLC sgd_solver.cpp).

One iteration (Solver::Step + SGDSolver::ApplyUpdate), reproduced step for step:
    zero the diffs; iter_size × (forward + backward) accumulating diffs; loss /= iter_size
    rate = learning_rate(sp, iter)              models/schedule.py (Caffe's lr policies)
    clip_gradients: scale every diff by clip/‖diff‖₂ when the global norm exceeds it
    per learnable blob: diff *= 1/iter_size     (when iter_size > 1)
                        diff += weight_decay·decay_mult · data        (L2; L1: · sign(data))
                        h = lr_mult·rate · diff + momentum · h         (SGD)
                        data -= h
    iter += 1
Blobs with lr_mult 0 are frozen (no gradient, no update). Under DDP the diffs are averaged
over ranks (as Caffe's multi-GPU NCCL solver does), so the effective batch is
batch × ranks × iter_size.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from google.protobuf import text_format

from models.schedule import learning_rate

from .net import _pb2


def read_solver_param(src):
    pb = _pb2()
    if isinstance(src, pb.SolverParameter):
        return src
    sp = pb.SolverParameter()
    text_format.Merge(Path(src).read_text(), sp)
    return sp


def solver_type(sp) -> str:
    t = sp.type if sp.HasField("type") else ""
    if not t and sp.HasField("solver_type"):
        t = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}[sp.solver_type]
    return t or "SGD"


class CaffeSGD:
    """Caffe's SGD/Nesterov update over a TorchNet's learnable blobs."""

    def __init__(self, param_specs, sp):
        self.sp = sp
        self.kind = solver_type(sp)
        if self.kind not in ("SGD", "Nesterov"):
            raise ValueError(f"solver type {self.kind!r} is not supported by the torch runtime "
                             f"(SGD and Nesterov are)")
        if sp.regularization_type not in ("L1", "L2"):
            raise ValueError(f"unknown regularization_type {sp.regularization_type!r}")
        # every learnable blob, frozen ones (lr_mult 0) included, in Caffe's order: the
        # history list then matches Caffe's .solverstate blob for blob
        self.specs = [(p, lr, dm) for p, lr, dm, *_ in param_specs]
        self.history = [torch.zeros_like(p) for p, *_ in self.specs]
        self.iter = 0

    def zero_grad(self):
        for p, *_ in self.specs:
            p.grad = None

    @torch.no_grad()
    def apply_update(self):
        sp = self.sp
        rate = learning_rate(sp, self.iter)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p, *_ in self.specs]
        if sp.clip_gradients >= 0:
            norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
            if norm > sp.clip_gradients:
                s = sp.clip_gradients / norm
                grads = [g * s for g in grads]
        wd = sp.weight_decay
        mom = sp.momentum
        iter_size = max(1, sp.iter_size)
        for (p, lr, dm), g, h in zip(self.specs, grads, self.history):
            if lr == 0:      # Caffe: history stays 0·h + 0, the blob does not move
                h.mul_(mom)
                continue
            d = g.float()
            if iter_size > 1:
                d = d * (1.0 / iter_size)
            local_decay = wd * dm
            if local_decay:
                if sp.regularization_type == "L2":
                    d = d + local_decay * p
                else:
                    d = d + local_decay * torch.sign(p)
            local_rate = rate * lr
            if self.kind == "SGD":
                h.mul_(mom).add_(d, alpha=local_rate)
                p.sub_(h)
            else:
                prev = h.clone()
                h.mul_(mom).add_(d, alpha=local_rate)
                p.sub_((1 + mom) * h - mom * prev)
        self.iter += 1
        return rate
