"""Train a Caffe solver prototxt with the torch runtime (one process, or DDP via torchrun).

    tr = Trainer("prototxt/seg_solver.prototxt", weights="data/c3d/c3d_sport1m.caffemodel",
                 opts=RunOptions(device="cuda", precision="bf16", channels_last=True))
    tr.step(10)                  # 10 iterations, snapshots at the solver's interval
    tr.test()                    # a test pass (test_iter batches) with the current weights

The loop around it (progress, logs, test passes, resume, stop on NaN or a signal) is the
front-end's, the same for both engines: ``python -m tools.train --engine torch``.

The net is the solver's ``net`` (or ``train_net``) in phase TRAIN (``train_state`` stages
honoured), its blobs filled from the layers' fillers (``fill``) before ``weights`` are
copied; data come from its own Python data layers (torch_runtime.data), or from ``feed=``
(an iterator of dicts). Snapshots (every ``snapshot`` iterations, or ``snapshot()``) are
Caffe files: ``<prefix>_iter_<n>.caffemodel`` (loads in Caffe) and
``<prefix>_iter_<n>.solverstate`` (Caffe's SolverState: iter, current_step, momentum
history), so a run can be resumed by either engine. Paths in the solver resolve from the
working directory, as in Caffe (run from the repo root).

Multi-GPU: ``python -m tools.train --engine torch --gpus N`` (torchrun); each rank holds a
replica, gradients are averaged (Caffe's multi-GPU semantics), the loss is averaged over
ranks, rank r's data layer reads with seed + r, rank 0 writes logs and snapshots.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist

from models.schedule import current_step

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


def fill(net: TorchNet, seed: int) -> None:
    """Initialize every learnable blob from its layer's weight_filler / bias_filler, as Caffe
    does when it builds a net: the same distributions (not Caffe's random stream); seed < 0
    draws a random one, as Caffe's random_seed."""
    g = torch.Generator()
    if seed >= 0:
        g.manual_seed(seed)
    else:
        g.seed()
    for layer in net.layers.values():
        param = next((v for d, v in layer.lp.ListFields() if d.message_type is not None
                      and "weight_filler" in d.message_type.fields_by_name), None)
        if param is None or not len(layer.blobs):
            continue
        with torch.no_grad():
            for blob, f in zip(layer.blobs, (param.weight_filler, param.bias_filler)):
                blob.copy_(_filled(f, tuple(blob.shape), g, layer.lname))


def _filled(f, shape: tuple, g: torch.Generator, where: str) -> torch.Tensor:
    """Caffe's fillers (filler.hpp): constant, uniform, gaussian, xavier, msra."""
    if f.type == "constant":
        return torch.full(shape, f.value)
    if f.type == "uniform":
        return torch.rand(shape, generator=g) * (f.max - f.min) + f.min
    if f.type == "gaussian":
        return torch.randn(shape, generator=g) * f.std + f.mean
    if f.type in ("xavier", "msra"):
        count = math.prod(shape)
        fan_in, fan_out = count / shape[0], count / shape[1] if len(shape) > 1 else count
        n = (fan_in, fan_out, (fan_in + fan_out) / 2)[f.variance_norm]
        if f.type == "xavier":
            return (torch.rand(shape, generator=g) * 2 - 1) * math.sqrt(3 / n)
        return torch.randn(shape, generator=g) * math.sqrt(2 / n)
    raise ValueError(f"layer '{where}': filler '{f.type}' is not supported by the torch runtime "
                     f"(start from --weights)")


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
                 input_shapes=None, log=print, resume=None):
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
        fill(self.net, sp.random_seed)
        for w in str(weights).split(",") if weights else ():
            self.log(f"weights {w}: copied {len(self.load_weights(w))} layers")
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
        self._test = None
        if resume:
            self.restore(resume)

    @property
    def iter(self) -> int:
        return self.opt.iter

    def load_weights(self, path) -> list[str]:
        """Copy a caffemodel's blobs by layer name; returns the layers copied."""
        return load_caffemodel(self.net, path)

    def _batch(self):
        return self.opts.batch(next(self.feed))

    def step(self, n: int = 1) -> list[float]:
        """n Caffe iterations (each iter_size forward/backward passes, one update); returns
        each iteration's loss (mean over iter_size passes and over ranks), NaN included:
        stopping on it is the caller's choice, as with Caffe's solver."""
        out = []
        for _ in range(n):
            self.opt.zero_grad()
            loss = self._accumulate(max(1, self.sp.iter_size))
            if self.world > 1:
                t = torch.tensor([loss], dtype=torch.float64, device=self.opts.device)
                dist.all_reduce(t)
                loss = float(t) / self.world
            self.opt.apply_update()
            out.append(loss)
            if self.sp.snapshot and self.iter % self.sp.snapshot == 0:
                self.snapshot()
        return out

    def _accumulate(self, iter_size: int) -> float:
        total = 0.0
        for i in range(iter_size):
            sync = self.world == 1 or i == iter_size - 1
            with self.model.no_sync() if not sync else contextlib.nullcontext():
                with self.opts.autocast():
                    res = self.model(self._batch())
                if res.loss is None:
                    raise ValueError("the train net has no loss (no layer with a loss weight)")
                res.loss.backward()
            total += float(res.loss.detach())
        return total / iter_size

    def check_ranks_in_sync(self) -> float:
        """Max over ranks of |checksum − rank 0's| of the weights (0 when replicas agree)."""
        with torch.no_grad():
            c = torch.stack([p.detach().double().sum() for p in self.net.parameters()]).sum()
            c = c.to(self.opts.device)
            ref = c.clone()
            dist.broadcast(ref, 0)
            d = (c - ref).abs()
            dist.all_reduce(d, op=dist.ReduceOp.MAX)
        self.log(f"{self.world} ranks, weights in sync: max checksum difference {float(d):.3g}")
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
        return means

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, prefix: str | None = None) -> Path | None:
        if self.rank != 0:
            return None
        prefix = prefix or self.sp.snapshot_prefix or "snapshot"
        base = Path(f"{prefix}_iter_{self.iter}")
        model = save_caffemodel(self.net, base.with_name(base.name + ".caffemodel"))
        self.write_solverstate(base.with_name(base.name + ".solverstate"), model)
        self.log(f"snapshot {model}")
        return model

    def write_solverstate(self, path: Path, model: Path):
        pb = _pb2()
        st = pb.SolverState()
        st.iter = self.iter
        st.learned_net = str(model)
        st.current_step = current_step(self.sp, max(self.iter - 1, 0))  # as Caffe's last update
        out = bytearray(st.SerializeToString())
        bp = pb.BlobProto.DESCRIPTOR.fields_by_name
        hist_f = pb.SolverState.DESCRIPTOR.fields_by_name["history"].number
        for h in self.opt.history:
            out += _field(hist_f, _blob_bytes(h.detach().float().cpu().numpy(),
                                              bp["shape"].number, bp["data"].number, pb))
        tmp = path.with_name(path.name + ".tmp")   # a kill mid-write leaves no partial state
        tmp.write_bytes(bytes(out))
        tmp.replace(path)

    def restore(self, path):
        """Resume from a .solverstate (Caffe's or ours): iteration, history and weights."""
        from .caffemodel import blob_to_array
        pb = _pb2()
        st = pb.SolverState()
        st.ParseFromString(Path(path).read_bytes())
        if len(st.history) != len(self.opt.history):
            raise ValueError(f"{path}: {len(st.history)} history blobs, the net has "
                             f"{len(self.opt.history)} learnable blobs")
        for h, b in zip(self.opt.history, st.history):
            h.copy_(torch.from_numpy(blob_to_array(b).reshape(h.shape)).to(h.device))
        self.opt.iter = st.iter
        # the training data continue where the interrupted run stopped (as tools.train
        # does for Caffe through V2V_START_ITER): iterations × iter_size batches
        if hasattr(self.feed, "skip") and st.iter:
            if not self.feed.skip(st.iter * max(1, self.sp.iter_size)):
                self.log("note: a data layer cannot skip; its stream restarts")
        if st.learned_net:
            learned = Path(st.learned_net)
            if not learned.exists():
                learned = Path(path).with_name(learned.name)
            load_caffemodel(self.net, learned)
        self.log(f"resumed from {path} at iteration {st.iter}")

