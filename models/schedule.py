"""Caffe's learning-rate schedule (SGDSolver::GetLearningRate, BVLC sgd_solver.cpp): the one
copy, used by both engines' front-end (tools.train) and the PyTorch runtime's solver.

    learning_rate(sp, it) -> float     the rate Caffe uses for the update of iteration ``it``
    current_step(sp, it) -> int        Caffe's ``current_step_`` after that update

``sp`` is a SolverParameter (or anything with its fields). Caffe computes the rate in
double and stores it in a float (the solver's Dtype); so do we, so that the two engines
and the logs agree to the bit. Caffe-free: no pycaffe or torch import.
"""
from __future__ import annotations

import math

import numpy as np


def current_step(sp, it: int) -> int:
    """The step index of the ``step`` and ``multistep`` policies at iteration ``it`` (what
    Caffe saves as SolverState.current_step); 0 for the other policies."""
    if sp.lr_policy == "step":
        if sp.stepsize <= 0:
            raise ValueError("lr_policy step needs stepsize > 0")
        return it // sp.stepsize
    if sp.lr_policy == "multistep":
        return sum(1 for v in sp.stepvalue if it >= v)
    return 0


def _rate(sp, it: int) -> float:
    # step/multistep/exp: base_lr · pow(gamma, int), in double as Caffe; inv/poly/sigmoid:
    # Caffe's float (Dtype) arithmetic, where powf / expf round the exact result to float.
    p, f = sp.lr_policy, np.float32
    if p in ("step", "multistep"):
        return sp.base_lr * math.pow(sp.gamma, current_step(sp, it))
    if p == "fixed":
        return sp.base_lr
    if p == "exp":
        return sp.base_lr * math.pow(sp.gamma, it)
    if p == "inv":
        return f(sp.base_lr) * f(math.pow(f(1) + f(sp.gamma) * f(it), -f(sp.power)))
    if p == "poly":
        return f(sp.base_lr) * f(math.pow(f(1) - f(it) / f(sp.max_iter), f(sp.power)))
    if p == "sigmoid":
        return f(sp.base_lr) * (f(1) / (f(1) + f(math.exp(-f(sp.gamma) * (f(it) - f(sp.stepsize))))))
    raise ValueError(f"unknown lr_policy {p!r} (one of {', '.join(POLICIES)})")


def learning_rate(sp, it: int) -> float:
    """The learning rate of iteration ``it`` (0-based), rounded to float32 as in Caffe."""
    return float(np.float32(_rate(sp, it)))


POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
