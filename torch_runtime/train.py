"""Train a Caffe solver prototxt with the torch runtime (one process, or DDP via torchrun).

    tr = Trainer("prototxt/seg_solver.prototxt", weights="data/c3d/c3d_sport1m.caffemodel",
                 opts=RunOptions(device="cuda", precision="bf16", channels_last=True))
    tr.run()                     # to max_iter, with display, test and snapshots as Caffe
    tr.step(10)                  # or a few iterations

The net is the solver's ``net`` (or ``train_net``) in phase TRAIN (``train_state`` stages
honoured); data come from its own Python data layers (torch_runtime.data), or from
``feed=`` (an iterator of dicts). Snapshots (every ``snapshot`` iterations, and at the end)
are Caffe files: ``<prefix>_iter_<n>.caffemodel`` (loads in Caffe) and
``<prefix>_iter_<n>.solverstate`` (Caffe's SolverState: iter, current_step, momentum
history), so a run can be resumed by either engine. Paths in the solver resolve from the
working directory, as in Caffe (run from the repo root).

Multi-GPU: ``torchrun --nproc_per_node N -m tools.torch_train --solver ...``; each rank
holds a replica, gradients are averaged (Caffe's multi-GPU semantics), rank r's data
layer reads with seed + r, rank 0 writes logs and snapshots.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .caffemodel import _blob_bytes, _field, load_caffemodel, save_caffemodel
from .data import NetFeed
from .net import TorchNet, _pb2
from .runtime import RunOptions
from .solver import CaffeSGD, read_solver_param


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(opts: RunOptions) -> tuple[int, int]:
    rank, world, local = dist_env()
    if world > 1 and not dist.is_initialized():
        if opts.is_cuda:
            torch.cuda.set_device(local)
            opts.device = f"cuda:{local}"
        dist.init_process_group("nccl" if opts.is_cuda else "gloo")
    return rank, world


def unused_learnable(net: TorchNet) -> list[str]:
    """Layers with learnable blobs that no loss depends on (e.g. a Silence'd branch)."""
    need = {t for _, _, tops, lw in net.plan for t, w in zip(tops, lw) if w}
    used = set()
    for key, bottoms, tops, lw in reversed(net.plan):
        if any(t in need for t in tops) or any(lw):
            used.add(key)
            need.update(bottoms)
    return [net.layers[k].lname for k, *_ in net.plan
            if k not in used and any(p.requires_grad for p in net.layers[k].blobs)]


class Trainer:
    def __init__(self, solver, weights=None, opts: RunOptions | None = None, feed=None,
                 input_shapes=None, log=print, resume=None, csv_log=None):
        """csv_log: a file that gets one line per iteration: iter,loss,smoothed_loss,lr."""
        self.csv = Path(csv_log) if csv_log else None
        self.sp = read_solver_param(solver)
        self.opts = opts or RunOptions()
        self.rank, self.world = init_distributed(self.opts)
        self.log = log if self.rank == 0 else (lambda *a, **k: None)
        sp = self.sp
        src = sp.net or sp.train_net
        if sp.HasField("net_param"):
            src = sp.net_param
        elif sp.HasField("train_net_param"):
            src = sp.train_net_param
        if not src:
            raise ValueError("the solver names no net (net: or train_net:)")
        stages = tuple(sp.train_state.stage)
        self.net = TorchNet(src, "TRAIN", input_shapes=input_shapes, stages=stages,
                            level=sp.train_state.level)
        self.net_src = src
        if weights:
            for w in str(weights).split(","):
                copied = load_caffemodel(self.net, w)
                self.log(f"[torch_train] weights {w}: copied {len(copied)} layers")
        compile_ = self.opts.compile
        self.opts.compile = False
        self.model = self.opts.prepare(self.net)
        self.opts.compile = compile_
        if self.world > 1:
            unused = unused_learnable(self.net)
            dev = [torch.device(self.opts.device).index] if self.opts.is_cuda else None
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=dev, find_unused_parameters=bool(unused))
        if compile_:   # after DDP, as PyTorch recommends
            self.model = torch.compile(self.model)
        self.opt = CaffeSGD(self.net.param_specs, sp)
        self.feed = feed if feed is not None else NetFeed(self.net, rank=self.rank)
        self.losses: list[float] = []
        self._test = None
        if resume:
            self.restore(resume)

    @property
    def iter(self) -> int:
        return self.opt.iter

    def _batch(self):
        return self.opts.batch(next(self.feed))

    def step(self, n: int = 1) -> list[float]:
        """n Caffe iterations (each iter_size forward/backward passes, one update)."""
        sp = self.sp
        iter_size = max(1, sp.iter_size)
        avg = max(1, sp.average_loss)
        out = []
        for _ in range(n):
            self.opt.zero_grad()
            total = 0.0
            for i in range(iter_size):
                sync = self.world == 1 or i == iter_size - 1
                ctx = self.model.no_sync() if not sync else _null()
                with ctx:
                    with self.opts.autocast():
                        res = self.model(self._batch())
                    if res.loss is None:
                        raise ValueError("the train net has no loss (no layer with a loss weight)")
                    res.loss.backward()
                total += float(res.loss.detach())
            loss = total / iter_size
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at iteration {self.iter}")
            self.losses.append(loss)
            smoothed = float(np.mean(self.losses[-avg:]))
            rate = self.opt.apply_update()
            out.append(loss)
            it = self.iter
            if self.csv is not None and self.rank == 0:
                with open(self.csv, "a") as f:
                    f.write(f"{it - 1},{loss:.9g},{smoothed:.9g},{rate:.9g}\n")
            if sp.display and (it - 1) % sp.display == 0:
                self.log(f"[torch_train] iter {it - 1} loss {smoothed:.6g} lr {rate:.3g}")
            if sp.snapshot and it % sp.snapshot == 0:
                self.snapshot()
            if sp.test_interval and it % sp.test_interval == 0 and len(sp.test_iter):
                self.test()
        return out

    def run(self, max_iter: int | None = None):
        max_iter = max_iter or self.sp.max_iter
        t0 = time.time()
        sp = self.sp
        if sp.test_interval and len(sp.test_iter) and self.iter == 0 and sp.test_initialization:
            self.test()
        while self.iter < max_iter:
            self.step(1)
        if self.world > 1:
            self.check_ranks_in_sync()
        if self.sp.snapshot_after_train if self.sp.HasField("snapshot_after_train") else True:
            self.snapshot()
        self.log(f"[torch_train] done: {self.iter} iterations in {time.time() - t0:.0f} s")

    def check_ranks_in_sync(self) -> float:
        """Max over ranks of |checksum − rank 0's| of the weights (0 when replicas agree)."""
        with torch.no_grad():
            c = torch.stack([p.detach().double().sum() for p in self.net.parameters()]).sum()
            c = c.to(self.opts.device)
            ref = c.clone()
            dist.broadcast(ref, 0)
            d = (c - ref).abs()
            dist.all_reduce(d, op=dist.ReduceOp.MAX)
        self.log(f"[torch_train] {self.world} ranks, weights in sync: max checksum difference {float(d):.3g}")
        return float(d)

    # ------------------------------------------------------------------ test
    def test(self) -> dict:
        if self.rank != 0:
            return {}
        sp = self.sp
        if self._test is None:
            src = sp.net or (sp.test_net[0] if len(sp.test_net) else None)
            if not src:
                return {}
            net = TorchNet(src, "TEST", stages=tuple(sp.test_state[0].stage) if len(sp.test_state) else ())
            opts = RunOptions(device=self.opts.device, precision=self.opts.precision,
                              channels_last=self.opts.channels_last)
            opts.prepare(net)
            net.eval()
            # the test net and its data layer persist, as in Caffe: each test continues
            # where the last one stopped in the test database
            self._test = (net, opts, NetFeed(net, prefetch=2))
        net, opts, feed = self._test
        with torch.no_grad():   # share the current weights (by layer name)
            for k, layer in net.layers.items():
                if k in self.net.layers:
                    for a, b in zip(layer.blobs, self.net.layers[k].blobs):
                        a.copy_(b.detach())
        sums: dict[str, float] = {}
        n = sp.test_iter[0]
        with torch.no_grad():
            for _ in range(n):
                with opts.autocast():
                    res = net(opts.batch(next(feed)))
                for k, v in res.items():
                    if v.numel() == 1:
                        sums[k] = sums.get(k, 0.0) + float(v)
        means = {k: v / n for k, v in sums.items()}
        self.log(f"[torch_train] test at iter {self.iter}: " +
                 ", ".join(f"{k} = {v:.6g}" for k, v in means.items()))
        return means

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, prefix: str | None = None) -> Path | None:
        if self.rank != 0:
            return None
        prefix = prefix or self.sp.snapshot_prefix or "snapshot"
        base = Path(f"{prefix}_iter_{self.iter}")
        model = save_caffemodel(self.net, base.with_name(base.name + ".caffemodel"))
        self.write_solverstate(base.with_name(base.name + ".solverstate"), model)
        self.log(f"[torch_train] snapshot {model}")
        return model

    def write_solverstate(self, path: Path, model: Path):
        pb = _pb2()
        st = pb.SolverState()
        st.iter = self.iter
        st.learned_net = str(model)
        st.current_step = int(self.opt.lr_state.get("current_step", 0))
        out = bytearray(st.SerializeToString())
        bp = pb.BlobProto.DESCRIPTOR.fields_by_name
        hist_f = pb.SolverState.DESCRIPTOR.fields_by_name["history"].number
        for h in self.opt.history:
            out += _field(hist_f, _blob_bytes(h.detach().float().cpu().numpy(),
                                              bp["shape"].number, bp["data"].number, pb))
        path.write_bytes(bytes(out))

    def restore(self, path):
        """Resume from a .solverstate (Caffe's or ours): iteration, history and weights."""
        from .caffemodel import blob_to_array  # noqa: PLC0415
        pb = _pb2()
        st = pb.SolverState()
        st.ParseFromString(Path(path).read_bytes())
        if len(st.history) != len(self.opt.history):
            raise ValueError(f"{path}: {len(st.history)} history blobs, the net has "
                             f"{len(self.opt.history)} learnable blobs")
        for h, b in zip(self.opt.history, st.history):
            h.copy_(torch.from_numpy(blob_to_array(b).reshape(h.shape)).to(h.device))
        self.opt.iter = st.iter
        self.opt.lr_state["current_step"] = st.current_step
        # the training data continue where the interrupted run stopped (as tools.train
        # does for Caffe through V2V_START_ITER): iterations × iter_size batches
        if hasattr(self.feed, "skip") and st.iter:
            if not self.feed.skip(st.iter * max(1, self.sp.iter_size)):
                self.log("[torch_train] note: a data layer cannot skip; its stream restarts")
        if st.learned_net:
            learned = Path(st.learned_net)
            if not learned.exists():
                learned = Path(path).with_name(learned.name)
            load_caffemodel(self.net, learned)
        self.log(f"[torch_train] resumed from {path} at iter {st.iter}")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
