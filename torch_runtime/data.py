"""Torch data over the nets' own data layers (the same databases, the same code as Caffe).

A train_val prototxt's data come from Python data layers (``data_prep.layers.ClipDataLayer``
and friends). ``LayerDataset`` runs that very layer class outside Caffe (its setup, reshape
and forward on NumPy blobs) and yields one dict ``{top: tensor}`` per forward, i.e. per
Caffe iteration, so a torch run sees the same batches in the same order as ``caffe train``
with the same param_str (seed included).

Under DDP, rank r of R reads with ``seed + r`` when the layer's param_str is a JSON object
with a "seed" key, so ranks see different clips (Caffe's multi-GPU solver gives each GPU
its own data layer the same way). ``data_prep`` is imported only here, lazily, by name
(``CAFFE_FREE_SAMPLERS``).
"""
from __future__ import annotations

import importlib
import json
import queue
import threading

import numpy as np
import torch

from .pylayers_torch import ShimBlob, instantiate_python_layer


# Python data layers whose sampler runs without pycaffe: (module, layer) -> "module:Class".
# Loaded by name, like any Python layer a prototxt names (the runtime imports no data_prep).
CAFFE_FREE_SAMPLERS = {("data_prep.layers", "ClipDataLayer"): "data_prep.clips:ClipSource"}


def _with_rank_seed(lp, rank: int):
    if rank == 0:
        return lp
    try:
        p = json.loads(lp.python_param.param_str)
    except (ValueError, TypeError):
        return lp
    if not isinstance(p, dict) or "seed" not in p:
        return lp
    p["seed"] = int(p["seed"]) + rank
    new = type(lp)()
    new.CopyFrom(lp)
    new.python_param.param_str = json.dumps(p)
    return new


class LayerDataset(torch.utils.data.IterableDataset):
    """Endless stream of batches from one Python data layer (no bottoms)."""

    def __init__(self, lp, phase: str, rank: int = 0):
        super().__init__()
        if lp.type != "Python" or len(lp.bottom):
            raise ValueError(f"layer '{lp.name}' ({lp.type}) is not a Python data layer")
        self.lp = _with_rank_seed(lp, rank)
        self.phase = phase
        self.tops = list(lp.top)
        self._layer = None
        self._source = None

    def _setup(self):
        pp = self.lp.python_param
        sampler = CAFFE_FREE_SAMPLERS.get((pp.module, pp.layer))
        if sampler is not None:     # the layer's own sampler, without Caffe
            mod, cls = sampler.split(":")
            src = getattr(importlib.import_module(mod), cls)(pp.param_str)
            self._source = src
            self._layer = src
            return
        layer = instantiate_python_layer(self.lp, self.phase)
        self._blobs = [ShimBlob() for _ in self.tops]
        layer.setup([], self._blobs)
        self._layer = layer

    def skip(self, batches: int) -> bool:
        """Advance the stream by ``batches`` batches without loading them (resume). True when
        the layer can (ClipDataLayer's ClipSource, or a layer with a ``skip`` method)."""
        if self._layer is None:
            self._setup()
        target = self._source if self._source is not None else self._layer
        if batches and hasattr(target, "skip"):
            target.skip(batches)
            return True
        return not batches

    def next_batch(self) -> dict:
        if self._layer is None:
            self._setup()
        if getattr(self, "_source", None) is not None:
            arrays = self._source.next_batch()
            return {t: torch.from_numpy(np.ascontiguousarray(a)) for t, a in zip(self.tops, arrays)}
        self._layer.reshape([], self._blobs)
        self._layer.forward([], self._blobs)
        return {t: torch.from_numpy(b.data.copy()) for t, b in zip(self.tops, self._blobs)}

    def __iter__(self):
        while True:
            yield self.next_batch()


class NetFeed:
    """All data layers of a TorchNet, merged into one dict per iteration, optionally
    prefetched in a background thread (``prefetch`` batches ahead) and moved to ``device``."""

    def __init__(self, net, rank: int = 0, prefetch: int = 2, device=None):
        self.sets = [LayerDataset(layer.lp, net.phase, rank) for layer in net.data_layers
                     if layer.ltype == "Python"]
        others = [layer.lname for layer in net.data_layers if layer.ltype != "Python"]
        self.fed_by_caller = others
        self.device = device
        self.prefetch = prefetch
        self._q = None

    def skip(self, batches: int) -> bool:
        """Resume: every data layer continues ``batches`` batches further (before the first
        batch is drawn). False if some layer cannot skip (it then restarts its stream)."""
        if self._q is not None:
            raise RuntimeError("skip() must come before the first batch")
        return all([s.skip(batches) for s in self.sets])

    def _one(self):
        out = {}
        for s in self.sets:
            out.update(s.next_batch())
        return out

    def _worker(self):
        while True:
            try:
                self._q.put(("ok", self._one()))
            except Exception as e:  # noqa: BLE001 - handed to the consumer
                self._q.put(("err", e))
                return

    def __iter__(self):
        return self

    def __next__(self):
        if self.prefetch <= 0:
            b = self._one()
        else:
            if self._q is None:
                self._q = queue.Queue(self.prefetch)
                threading.Thread(target=self._worker, daemon=True).start()
            kind, b = self._q.get()
            if kind == "err":
                raise b
        if self.device is not None:
            b = {k: v.to(self.device, non_blocking=True) for k, v in b.items()}
        return b
