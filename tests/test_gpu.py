"""The GPU paths, wherever a GPU is (tests/conftest.py deselects them elsewhere, in one
summary line; --require-gpu makes that a failure):

- every 3D layer in GPU mode against CPU mode (forward, bottom/weight/bias diffs), and
  finite differences of conv and deconv in GPU mode;
- the seg / flow / colour deploy and train_val nets (the latter through their clip
  database data layer), one forward + backward on GPU against CPU at 8×32×32 (the seg
  deploy net also at the full 16×112×112 clip), and 10 solver steps on the CPU loss curve;
- the user's `caffe train -gpu 0`, `-gpu all` refused for a Python data layer, `caffe time -gpu 1`;
- the PyTorch runtime on CUDA (fp32 and the bf16 fast path) against Caffe on the GPU,
  and DDP training over NCCL on two GPUs.

A "decision flip" (a ReLU input or max-pool near-tie that rounding puts on the other side
in one mode) changes every upstream gradient by far more than rounding: as in
tests/test_torch_suite.py, a net comparison draws the next seed when one happens.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from models import v2v
from models.engine import gpu_unavailable_reason
from models.paths import PROTOTXT, REPO
from tests.data_fixtures import TINY_DATA, TINY_NET, write_tiny_db

CAFFE = REPO / ".venv" / "bin" / "caffe"
DEVICES = ("cpu", "gpu")
LAYER_TOL = 1e-5   # one layer: GEMM / col2vol sums in another order
NET_TOL = 1e-4     # a whole net: cuBLAS sums differ from OpenBLAS's, layer after layer
# Full 16×112×112 clip (~10⁸ ReLU inputs): every seed has a few decision flips; the torch
# runtime's parity measured parameter gradients ≤ 4e-4 there (torch_runtime/README.md).
FLIP_GRAD_TOL = 2e-3
FD_TOL = 1e-2      # finite differences in float32 (eps 1e-2); a wrong kernel is off by O(1)
SOLVER_STEPS_TOL = 1e-3
# torch bf16 autocast + channels_last_3d against Caffe fp32: bf16 keeps 8 mantissa bits
# (~4e-3 per rounding); through V2V's conv layers torch_runtime/gpu_check.py expects ~1e-2, and
# the CPU's bf16 autocast gave 0.9–1.1e-2 on these three nets (8×32×32, He weights).
BF16_TOL = 3e-2
SEEDS = range(5)
NETS = ["seg_v2v", "flow_v2v", "color_v2v"]


@pytest.fixture(autouse=True)
def _back_to_cpu(request):
    """Caffe's mode is per thread and the session shares it: a GPU test leaves it on CPU."""
    yield
    if request.node.get_closest_marker("gpu"):
        from models.engine import caffe
        caffe().set_mode_cpu()


def on(device: str):
    """Caffe on the CPU or on GPU 0 (only through models.engine.use_gpu)."""
    from models.engine import caffe, use_gpu
    if device == "gpu":
        return use_gpu(0)
    caffe().set_mode_cpu()
    return caffe()


def rel(ref, got) -> float:
    """max |ref − got| / max |ref| (max |got| when ref is all zeros)."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    assert ref.shape == got.shape
    den = np.abs(ref).max()
    return float(np.abs(ref - got).max() / den) if den > 0 else float(np.abs(got).max())


def assert_close(ref: dict, got: dict, tol: float, what=""):
    errs = {k: rel(ref[k], got[k]) for k in ref}
    worst = sorted(errs.items(), key=lambda kv: -kv[1])[:5]
    assert worst[0][1] <= tol, f"{what} max rel. error > {tol}: {worst}"


def he_weights(net, seed: int) -> None:
    """He-scaled weights (deep nets keep O(1) activations: a comparison that means something)."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for i, b in enumerate(blobs):
            shp = b.data.shape
            if i == 0 and len(shp) > 1:
                b.data[...] = rng.standard_normal(shp) * np.sqrt(2.0 / np.prod(shp[1:]))
            else:
                b.data[...] = 0.1 * rng.standard_normal(shp)


def caffe_pass(net, inputs: dict, top_diffs: dict, watch=()):
    """Inputs in, param diffs zeroed, forward, watched blobs copied, backward (from
    ``top_diffs``, or the loss); returns (blobs, diffs of the params and of the inputs).
    Every access goes through pycaffe's properties, which move the head to the CPU."""
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    for blobs in net.params.values():
        for b in blobs:
            b.diff[...] = 0
    net.forward()
    seen = {n: net.blobs[n].data.copy() for n in dict.fromkeys([*net.outputs, *watch])}
    net.backward(**top_diffs)
    grads = {f"{n}[{i}]": b.diff.copy() for n, blobs in net.params.items() for i, b in enumerate(blobs)}
    grads.update({k: net.blobs[k].diff.copy() for k in inputs})
    return seen, grads


def both_modes(net, inputs, top_diffs, watch=()):
    """The same net, weights and inputs: {"cpu": pass, "gpu": pass}."""
    out = {}
    for dev in DEVICES:
        on(dev)
        out[dev] = caffe_pass(net, inputs, top_diffs, watch)
    return out


# ------------------------------------------------------------------ decision flips
def decisions(net, text: str):
    """(ReLU top blobs, [(MAX Pooling3D bottom blob, kernel)]) of a pycaffe net built from ``text``."""
    from google.protobuf import text_format

    from models.engine import pb2
    params = {lp.name: lp for lp in text_format.Parse(text, pb2().NetParameter()).layer}
    relus, pools = [], []
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "ReLU":
            relus.append(net.top_names[name][0])
        elif layer.type == "Pooling3D" and params[name].pooling3d_param.pool == 0:  # MAX
            p = params[name].pooling3d_param
            k = (p.kernel_depth, p.kernel_size, p.kernel_size)
            assert k == (p.temporal_stride, p.stride, p.stride) and p.pad == p.temporal_pad == 0, name
            pools.append((net.bottom_names[name][0], k))
    return relus, pools


def winners(x, k):
    """Index of the max in each (non-overlapping, ceil-mode) pooling window."""
    n, c, *dims = x.shape
    full = [-(-d // kk) * kk for d, kk in zip(dims, k)]
    p = np.full((n, c, *full), -np.inf, np.float32)
    p[:, :, :dims[0], :dims[1], :dims[2]] = x
    o = [f // kk for f, kk in zip(full, k)]
    p = p.reshape(n, c, o[0], k[0], o[1], k[1], o[2], k[2]).transpose(0, 1, 2, 4, 6, 3, 5, 7)
    return p.reshape(n, c, *o, -1).argmax(-1)


def flips(runs, relus, pools) -> int:
    (a, _), (b, _) = runs["cpu"], runs["gpu"]
    n = sum(int(((a[t] > 0) != (b[t] > 0)).sum()) for t in relus)
    return n + sum(int((winners(a[t], k) != winners(b[t], k)).sum()) for t, k in pools)


def flip_free(run, relus, pools):
    """run(seed) -> runs; the first seed whose two runs took every decision alike."""
    for seed in SEEDS:
        runs = run(seed)
        n = flips(runs, relus, pools)
        if n == 0:
            return runs
    pytest.fail(f"every seed hit a decision flip (the last: {n})")


# ------------------------------------------------------------------ layers
def layer_net(shape, body: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return ("force_backward: true\n"
            f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
            f'layer {{ name: "l" bottom: "data" top: "y" {body} }}\n')


def conv(kind, out, kd, k, ts, s, tp, p, g=1) -> str:
    return (f'type: "{kind}" convolution3d_param {{ num_output: {out} kernel_depth: {kd} kernel_size: {k} '
            f"temporal_stride: {ts} stride: {s} temporal_pad: {tp} pad: {p} group: {g} "
            'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" std: 0.1 } }')


def pool(method, kd, k, ts, s, tp=0, p=0) -> str:
    return (f'type: "Pooling3D" pooling3d_param {{ pool: {method} kernel_depth: {kd} kernel_size: {k} '
            f"temporal_stride: {ts} stride: {s} temporal_pad: {tp} pad: {p} }}")


# The geometries of tests/test_engine_layers.py: (N,C,L,H,W), layer
LAYER_CASES = {
    "conv_c3d_3x3x3": ((1, 3, 5, 7, 6), conv("Convolution3D", 4, 3, 3, 1, 1, 1, 1)),
    "conv_stride2_group2": ((2, 4, 7, 9, 8), conv("Convolution3D", 6, 2, 3, 2, 2, 1, 0, 2)),
    "conv_temporal_kernel1": ((2, 3, 4, 8, 8), conv("Convolution3D", 4, 1, 3, 1, 1, 0, 1)),
    "conv_big_pads_strides": ((2, 3, 6, 11, 10), conv("Convolution3D", 5, 3, 5, 3, 3, 2, 2)),
    "deconv_v2v_deconv3": ((1, 4, 2, 3, 3), conv("Deconvolution3D", 3, 4, 8, 2, 4, 1, 2)),
    "deconv_group2": ((2, 4, 2, 3, 4), conv("Deconvolution3D", 4, 4, 4, 2, 2, 1, 1, 2)),
    "deconv_odd": ((1, 3, 3, 4, 3), conv("Deconvolution3D", 2, 3, 3, 1, 2, 0, 1)),
    "maxpool_ceil_border": ((1, 2, 5, 7, 7), pool("MAX", 2, 2, 2, 2)),
    "maxpool_c3d_pool1": ((2, 3, 4, 6, 5), pool("MAX", 1, 2, 1, 2)),
    "maxpool_padded": ((1, 2, 7, 9, 8), pool("MAX", 3, 3, 2, 2, 1, 1)),
    "avepool_ceil_border": ((1, 2, 5, 7, 7), pool("AVE", 2, 2, 2, 2)),
    "avepool_padded": ((1, 2, 7, 9, 8), pool("AVE", 3, 3, 2, 2, 1, 1)),
}


def layer_input(case, shape, rng):
    if "pool" in case:  # distinct values: max pooling without ties
        return (rng.permutation(np.prod(shape)).reshape(shape) / 7.0).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_gpu_matches_cpu(make_net, case):
    shape, body = LAYER_CASES[case]
    net = make_net(layer_net(shape, body))
    rng = np.random.default_rng(0)
    x = layer_input(case, shape, rng)
    R = rng.standard_normal(net.blobs["y"].data.shape).astype(np.float32)
    runs = both_modes(net, {"data": x}, {"y": R})
    (cy, cg), (gy, gg) = runs["cpu"], runs["gpu"]
    assert set(cg) == ({"data", "l[0]", "l[1]"} if "conv" in case else {"data"})
    assert all(np.abs(g).max() > 0 for g in cg.values())
    assert_close(cy, gy, LAYER_TOL, "forward")
    assert_close(cg, gg, LAYER_TOL, "gradients")


def objective(net, x, R) -> float:
    net.blobs["data"].data[...] = x
    net.forward()
    return float((net.blobs["y"].data.astype(np.float64) * R).sum())


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["Convolution3D", "Deconvolution3D"])
def test_gradients_match_finite_differences_on_gpu(make_net, kind):
    """Central differences of Σ y·R in GPU mode, as tests/test_engine_layers.py on the CPU."""
    shape = (1, 2, 4, 5, 5)
    net = make_net(layer_net(shape, conv(kind, 3, 3, 3, 1, 2 if kind.startswith("De") else 1, 1, 1)))
    on("gpu")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    R = rng.standard_normal(net.blobs["y"].data.shape).astype(np.float32)
    _, grads = caffe_pass(net, {"data": x}, {"y": R})
    eps = 1e-2
    for name in ("data", "l[0]", "l[1]"):
        def values():  # the property, each time: pycaffe marks the CPU copy as the newest
            return x.reshape(-1) if name == "data" else net.params["l"][int(name[2])].data.reshape(-1)
        for idx in rng.choice(values().size, size=min(6, values().size), replace=False):
            old = float(values()[idx])
            f = []
            for step in (eps, -eps):
                values()[idx] = old + step
                f.append(objective(net, x, R))
            values()[idx] = old
            num, ana = (f[0] - f[1]) / (2 * eps), float(grads[name].reshape(-1)[idx])
            assert abs(num - ana) <= FD_TOL * max(1.0, abs(num)), (name, idx, num, ana)


# ------------------------------------------------------------------ nets
def deploy_text(key: str) -> str:
    return "force_backward: true\n" + (PROTOTXT / f"{key}_deploy.prototxt").read_text()


def deploy_runs(net, seed: int, watch):
    """He weights, a random clip and a random top gradient from ``seed``; both modes."""
    he_weights(net, seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(net.blobs["data"].data.shape).astype(np.float32)
    out = net.outputs[0]
    R = rng.standard_normal(net.blobs[out].data.shape).astype(np.float32)
    return both_modes(net, {"data": x}, {out: R}, watch)


def deploy_net(make_net, key, shape=None):
    text = deploy_text(key)
    net = make_net(text)
    if shape:
        net.blobs["data"].reshape(*shape)
        net.reshape()
    relus, pools = decisions(net, text)
    return net, relus, pools


@pytest.mark.gpu
@pytest.mark.parametrize("key", NETS)
def test_deploy_net_gpu_matches_cpu(make_net, key):
    v = v2v.variant(key)
    net, relus, pools = deploy_net(make_net, key, (1, v.C, 8, 32, 32))
    watch = relus + [b for b, _ in pools]
    runs = flip_free(lambda seed: deploy_runs(net, seed, watch), relus, pools)
    (cb, cg), (gb, gg) = runs["cpu"], runs["gpu"]
    assert_close({k: cb[k] for k in net.outputs}, gb, NET_TOL, f"{key} outputs")
    assert np.abs(cg["conv1a[0]"]).max() > 0 and np.abs(cg["data"]).max() > 0
    assert_close(cg, gg, NET_TOL, f"{key} gradients")


@pytest.mark.slow
@pytest.mark.gpu
def test_seg_deploy_full_clip_gpu_matches_cpu(make_net):
    net, relus, pools = deploy_net(make_net, "seg_v2v")
    assert net.blobs["data"].data.shape == (1, 3, 16, 112, 112)
    runs = deploy_runs(net, 0, relus + [b for b, _ in pools])
    (cb, cg), (gb, gg) = runs["cpu"], runs["gpu"]
    n = flips(runs, relus, pools)
    assert_close({"prob": cb["prob"]}, gb, NET_TOL, "prob")
    assert_close(cg, gg, NET_TOL if n == 0 else FLIP_GRAD_TOL, f"gradients ({n} decision flips)")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data/ folder: tiny train/test databases of the three tasks and a C3D-sized mean."""
    root = tmp_path_factory.mktemp("data")
    for key in NETS:
        v = v2v.variant(key)
        for split in v.splits:
            write_tiny_db(root / "db" / v.dataset / split, v.task)
    mean = root / v2v.C3D_MEAN.removeprefix("data/")
    mean.parent.mkdir(parents=True)
    np.save(mean, np.full((3, 16, 128, 171), 100, np.float32))
    return root


def tiny_train_val(key, root, tmp_path):
    """The committed train_val reading ``root``'s databases, with 32×32 crops of 8 frames."""
    text = (PROTOTXT / f"{key}_train_val.prototxt").read_text()
    subs = [('"db": "data/', f'"db": "{root}/'), ('"crop": 112', '"crop": 32'), ('"length": 16', '"length": 8')]
    if v2v.variant(key).task == "seg":
        subs.append((f'"mean": "{v2v.C3D_MEAN}"', f'"mean": "{root / v2v.C3D_MEAN.removeprefix("data/")}"'))
    for old, new in subs:
        assert old in text, (key, old)
        text = text.replace(old, new)
    p = tmp_path / f"{key}_train_val.prototxt"
    p.write_text(text)
    return p, text


@pytest.mark.gpu
@pytest.mark.parametrize("key", NETS)
def test_train_val_net_gpu_matches_cpu(caffe, data_root, tmp_path, key):
    """Through the clip-database data layer (the same seed: the same first clip in both
    nets), one forward + backward of the loss in each mode."""
    path, text = tiny_train_val(key, data_root, tmp_path)
    probe = caffe.Net(str(path), caffe.TRAIN)
    relus, pools = decisions(probe, text)
    score = probe.bottom_names["loss"][0]
    del probe

    def run(seed):
        runs = {}
        for dev in DEVICES:
            on(dev)
            net = caffe.Net(str(path), caffe.TRAIN)
            he_weights(net, seed)
            runs[dev] = caffe_pass(net, {}, {}, ["data", "label", score] + relus + [b for b, _ in pools])
        return runs

    runs = flip_free(run, relus, pools)
    (cb, cg), (gb, gg) = runs["cpu"], runs["gpu"]
    assert cb["data"].shape == (1, v2v.variant(key).C, 8, 32, 32)
    np.testing.assert_array_equal(cb["data"], gb["data"])
    np.testing.assert_array_equal(cb["label"], gb["label"])
    assert_close({"loss": cb["loss"], score: cb[score]}, gb, NET_TOL, f"{key} loss")
    assert np.abs(cg["conv1a[0]"]).max() > 0
    assert_close(cg, gg, NET_TOL, f"{key} gradients")


def smooth_seg_task(shape):
    """A clip whose labels are a smooth function of it (as tests/test_nets.py): SGD can fit it."""
    rng = np.random.default_rng(3)
    x = np.cumsum(np.cumsum(rng.normal(0, 1, shape), axis=3), axis=4)
    x = (x - x.mean()) / x.std()
    return 50 * x, np.digitize(x[:, :1], [-1, -0.3, 0.3, 1])


SOLVER = """net: "{net}"
base_lr: 0.01
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.005
max_iter: 1000
display: 0
random_seed: 7
snapshot_prefix: "{prefix}"
"""


@pytest.mark.gpu
def test_solver_steps_follow_the_cpu_loss_curve(caffe, tmp_path):
    """seg_v2v's topology (1/8 width) at 8×32×32: 10 SGD steps from the same weights."""
    shape = (2, 3, 8, 32, 32)
    net_path = tmp_path / "seg.prototxt"
    net_path.write_text(v2v.build("seg_v2v", "train_val", data_source="input", input_shape=shape, width=8))
    sp = tmp_path / "solver.prototxt"
    sp.write_text(SOLVER.format(net=net_path, prefix=tmp_path / "snap"))
    x, label = smooth_seg_task(shape)
    curves, start = {}, None
    for dev in DEVICES:
        on(dev)
        caffe.set_random_seed(7)
        solver = caffe.get_solver(str(sp))
        net = solver.net
        if start is None:
            start = {n: [b.data.copy() for b in blobs] for n, blobs in net.params.items()}
        for n, blobs in net.params.items():
            for b, w in zip(blobs, start[n]):
                b.data[...] = w
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = label
        curves[dev] = []
        for _ in range(10):
            solver.step(1)
            curves[dev].append(float(net.blobs["loss"].data))
    assert curves["cpu"][-1] < 0.95 * curves["cpu"][0], curves["cpu"]  # the steps really train
    np.testing.assert_allclose(curves["gpu"], curves["cpu"], rtol=SOLVER_STEPS_TOL)


# ------------------------------------------------------------------ the caffe command
def run_caffe(args, env=None, cwd=REPO):
    env = {**os.environ, **(env or {})}
    env.pop("GLOG_minloglevel", None)  # Caffe's own log lines are asserted on
    return subprocess.run([str(CAFFE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.gpu
def test_caffe_train_on_gpu_0(data_root, tmp_path):
    """The README's command, `caffe train -solver prototxt/seg_solver.prototxt` + `-gpu 0`,
    on tiny databases: trains on GPU 0 and writes its snapshot."""
    runs = tmp_path / "runs"
    env = {"V2V_DATA": str(data_root), "V2V_RUNS": str(runs), "V2V_MAX_ITER": "2"}
    r = run_caffe(["train", "-solver", "prototxt/seg_solver.prototxt", "-gpu", "0"], env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Using GPUs 0" in out and "Use CPU." not in out, out[-2000:]
    assert re.search(r"Iteration 0.*loss = [0-9.]+", out), out[-2000:]
    assert (runs / "seg_v2v" / "snapshots" / "seg_v2v_iter_2.caffemodel").exists(), out[-2000:]


@pytest.mark.gpu(count=2)
def test_caffe_train_on_all_gpus_refuses_python_layers(data_root, tmp_path):
    env = {"V2V_DATA": str(data_root), "V2V_RUNS": str(tmp_path / "runs"), "V2V_MAX_ITER": "2"}
    r = run_caffe(["train", "-solver", "prototxt/seg_solver.prototxt", "-gpu", "all"], env)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "multi-GPU training cannot run Python layers" in r.stderr and "--engine torch --gpus" in r.stderr
    assert "Check failed" not in r.stderr


@pytest.mark.gpu(count=2)
def test_caffe_time_on_gpu_1():
    r = run_caffe(["time", "-model", "prototxt/seg_v2v_deploy.prototxt", "-gpu", "1", "-iterations", "1"])
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Use GPU with device ID 1" in out and "Average Forward pass" in out and "deconv3" in out


# ------------------------------------------------------------------ PyTorch runtime on CUDA
def torch_outputs(deploy, weights, x, **opts) -> dict:
    import torch

    from torch_runtime import TorchNet, load_caffemodel
    from torch_runtime.runtime import RunOptions
    net = TorchNet(str(deploy), "TEST")
    load_caffemodel(net, weights, strict=True)
    ro = RunOptions("cuda", **opts)
    model = ro.prepare(net)
    if ro.precision == "fp32":
        assert not (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    with torch.inference_mode(), ro.autocast():
        out = model(ro.batch({"data": torch.from_numpy(x)}))
    return {k: v.float().cpu().numpy() for k, v in out.items()}


TORCH_PATHS = {"fp32": (dict(precision="fp32", tf32=False), NET_TOL),
               "bf16_channels_last": (dict(precision="bf16", channels_last=True), BF16_TOL)}


@pytest.mark.gpu(torch=True)
@pytest.mark.parametrize("path", sorted(TORCH_PATHS))
@pytest.mark.parametrize("key", NETS)
def test_torch_cuda_matches_caffe_gpu(caffe, tmp_path, key, path):
    """Full 16×112×112 clip, He weights written by Caffe and read by the torch runtime."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    deploy = PROTOTXT / f"{key}_deploy.prototxt"
    on("gpu")
    net = caffe.Net(str(deploy), caffe.TEST)
    he_weights(net, 0)
    x = np.random.default_rng(0).standard_normal(net.blobs["data"].data.shape).astype(np.float32)
    net.blobs["data"].data[...] = x
    ref = {k: v.copy() for k, v in net.forward().items()}
    net.save(str(tmp_path / "w.caffemodel"))
    opts, tol = TORCH_PATHS[path]
    got = torch_outputs(deploy, tmp_path / "w.caffemodel", x, **opts)
    assert set(ref) <= set(got)
    assert_close(ref, got, tol, f"{key} torch {path} vs Caffe GPU")


TINY_SOLVER = """net: "{net}"
base_lr: 0.05
lr_policy: "step"
gamma: 0.5
stepsize: 10
momentum: 0.9
weight_decay: 0.0005
max_iter: 3
snapshot: 3
snapshot_prefix: "runs/tiny/snapshots/tiny"
random_seed: 1
test_iter: 1
test_interval: 10
"""


@pytest.mark.gpu(torch=True, count=2)
def test_torch_ddp_on_two_gpus(tmp_path):
    """`python -m tools.train --engine torch --gpus 2`: two NCCL ranks, replicas in sync."""
    (tmp_path / "tiny_data.py").write_text(TINY_DATA)
    (tmp_path / "net.prototxt").write_text(TINY_NET)
    sp = tmp_path / "solver.prototxt"
    sp.write_text(TINY_SOLVER.format(net=tmp_path / "net.prototxt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    env.pop("V2V_MAX_ITER", None)
    r = subprocess.run([sys.executable, "-m", "tools.train", "--solver", str(sp), "--engine", "torch",
                        "--gpus", "2", "--out", str(tmp_path / "ddp")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "torch on cuda" in r.stdout and "2 ranks, weights in sync: max checksum difference 0" in r.stdout
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "train_log.csv")))
    assert [int(x["iter"]) for x in rows] == [0, 1, 2]
    assert (tmp_path / "ddp" / "snapshots" / "tiny_iter_3.caffemodel").exists()


# ------------------------------------------------------------------ the plumbing, here
@pytest.mark.skipif(gpu_unavailable_reason() == "", reason="a GPU is usable here: the GPU tests themselves run")
def test_gpu_tests_are_deselected_in_one_line_here():
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    lines = [x for x in out.splitlines() if "GPU tests not run:" in x]
    assert len(lines) == 1 and gpu_unavailable_reason() in lines[0], out[-2000:]
    assert r.returncode == 5 and " passed" not in out and " failed" not in out, out[-2000:]  # 5: none ran
    r = subprocess.run(cmd + ["--require-gpu"], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no GPU test can run here" in out, out[-2000:]
