"""Caffe's SGD solver semantics: 10 iterations of pycaffe's SGDSolver and of the torch
Trainer, from the same weights and the same Python data layer, give the same weights."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch runtime tests need torch==2.13.0 (make setup-torch)")

from torch_runtime import TorchNet, load_caffemodel  # noqa: E402
from torch_runtime.train import Trainer  # noqa: E402

DATA_LAYER = '''
import json
import numpy as np
import caffe


class SeqData(caffe.Layer):
    """Deterministic batches: batch i is drawn from seed + i (a clip and its labels)."""

    def setup(self, bottom, top):
        p = json.loads(self.param_str)
        self.shape, self.k, self.seed, self.i = p["shape"], p["k"], p["seed"], 0

    def reshape(self, bottom, top):
        top[0].reshape(*self.shape)
        top[1].reshape(self.shape[0], 1, *self.shape[2:])

    def forward(self, bottom, top):
        rng = np.random.default_rng(self.seed + self.i)
        self.i += 1
        top[0].data[...] = rng.standard_normal(self.shape)
        lab = rng.integers(0, self.k, size=top[1].data.shape).astype(np.float32)
        lab[rng.random(lab.shape) < 0.1] = 255
        top[1].data[...] = lab

    def backward(self, top, propagate_down, bottom):
        pass
'''

NET = '''name: "tiny"
layer { name: "data" type: "Python" top: "data" top: "label"
  python_param { module: "torch_solver_data" layer: "SeqData"
                 param_str: '{"shape": [2, 3, 4, 8, 8], "k": 4, "seed": 7}' } }
layer { name: "conv1" type: "Convolution3D" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution3d_param { num_output: 6 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1
    weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling3D" bottom: "conv1" top: "pool1"
  pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
layer { name: "frozen" type: "Convolution3D" bottom: "pool1" top: "frozen"
  param { lr_mult: 0 } param { lr_mult: 0 }
  convolution3d_param { num_output: 6 kernel_size: 1 kernel_depth: 1
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "deconv" type: "Deconvolution3D" bottom: "frozen" top: "deconv"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution3d_param { num_output: 4 kernel_size: 4 kernel_depth: 4 stride: 2 temporal_stride: 2
    pad: 1 temporal_pad: 1
    weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "constant" value: 0.0 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "deconv" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalization: VALID } }
'''

POLICIES = {
    "step": 'lr_policy: "step" gamma: 0.5 stepsize: 3',
    "fixed": 'lr_policy: "fixed"',
    "inv": 'lr_policy: "inv" gamma: 0.1 power: 0.75',
    "multistep": 'lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 5 stepvalue: 7',
}


@pytest.fixture
def data_module(tmp_path, monkeypatch):
    (tmp_path / "torch_solver_data.py").write_text(DATA_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("torch_solver_data", None)


def write_solver(tmp_path, policy, iter_size=1, extra=""):
    (tmp_path / "net.prototxt").write_text(NET)
    s = (f'net: "{tmp_path}/net.prototxt"\nbase_lr: 0.5\n{POLICIES[policy]}\nmomentum: 0.9\n'
         f'weight_decay: 0.01\nmax_iter: 10\niter_size: {iter_size}\ndisplay: 0\nsnapshot: 0\n'
         f'snapshot_prefix: "{tmp_path}/snap"\n{extra}\n')
    (tmp_path / "solver.prototxt").write_text(s)
    return tmp_path / "solver.prototxt"


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def run_both(caffe, tmp_path, policy, iter_size=1, extra="", steps=10):
    solver_path = write_solver(tmp_path, policy, iter_size, extra)
    cs = caffe.get_solver(str(solver_path))   # honours `type:` (SGDSolver() would not)
    w0 = tmp_path / "w0.caffemodel"
    cs.net.save(str(w0))
    init = {k: [b.data.copy() for b in v] for k, v in cs.net.params.items()}
    cs.step(steps)
    tr = Trainer(solver_path, weights=w0, log=lambda *a: None)
    tr.feed.prefetch = 0
    tr.step(steps)
    rows = []
    for name, blobs in tr.net.params.items():
        for i, p in enumerate(blobs):
            c = cs.net.params[name][i].data
            t = p.detach().numpy()
            rows.append((f"{name}[{i}]", rel(c, t), rel(c - init[name][i], t - init[name][i])))
    return rows, cs, tr, init


@pytest.mark.parametrize("policy,iter_size", [("step", 1), ("fixed", 2), ("inv", 1), ("multistep", 1)])
def test_ten_sgd_steps_match_pycaffe(caffe, data_module, policy, iter_size):
    rows, cs, tr, init = run_both(caffe, data_module, policy, iter_size)
    worst_w = max(r[1] for r in rows)
    worst_update = max(r[2] for r in rows if not r[0].startswith("frozen"))
    assert worst_w < 1e-5, rows
    assert worst_update < 1e-3, rows
    for i in range(2):   # lr_mult 0: not moved in either engine
        np.testing.assert_array_equal(tr.net.params["frozen"][i].detach().numpy(), init["frozen"][i])
    assert tr.iter == cs.iter == 10


def test_clip_gradients_and_nesterov(caffe, data_module):
    rows, *_ = run_both(caffe, data_module, "step", 1, 'clip_gradients: 0.05\ntype: "Nesterov"')
    assert max(r[1] for r in rows) < 1e-5, rows
    assert max(r[2] for r in rows if not r[0].startswith("frozen")) < 1e-3, rows


def test_fillers_follow_the_prototxt(data_module):
    """Without weights the Trainer starts as Caffe does, from the layers' fillers (gaussian
    std 0.2, constant 0.1 here); the solver's random_seed makes it repeatable."""
    solver_path = write_solver(data_module, "fixed", extra="random_seed: 5")
    a, b = (Trainer(solver_path, log=lambda *a: None) for _ in range(2))
    w, bias = (p.detach() for p in a.net.params["conv1"])
    assert float(w.std()) == pytest.approx(0.2, rel=0.15) and abs(float(w.mean())) < 0.03
    assert torch.equal(bias, torch.full_like(bias, 0.1))
    for name, blobs in a.net.params.items():
        for p, q in zip(blobs, b.net.params[name]):
            assert torch.equal(p, q), name


def test_snapshot_loads_in_caffe_and_resumes(caffe, data_module):
    solver_path = write_solver(data_module, "step")
    tr = Trainer(solver_path, log=lambda *a: None)
    tr.feed.prefetch = 0
    tr.step(3)
    model = tr.snapshot()
    assert model.name == "snap_iter_3.caffemodel"
    cnet = caffe.Net(str(data_module / "net.prototxt"), str(model), caffe.TEST)
    for name, blobs in tr.net.params.items():
        for i, p in enumerate(blobs):
            np.testing.assert_array_equal(cnet.params[name][i].data, p.detach().numpy())
    # resume in pycaffe from our .solverstate, and in torch; 2 more steps agree
    tr2 = Trainer(solver_path, log=lambda *a: None, resume=data_module / "snap_iter_3.solverstate")
    assert tr2.iter == 3
    for a, b in zip(tr.opt.history, tr2.opt.history):
        assert torch.equal(a, b)
    cs = caffe.SGDSolver(str(solver_path))
    cs.restore(str(data_module / "snap_iter_3.solverstate"))
    assert cs.iter == 3
    for name, blobs in tr.net.params.items():
        for i, p in enumerate(blobs):
            np.testing.assert_array_equal(cs.net.params[name][i].data, p.detach().numpy())


def test_net_from_solver_loads_caffemodel(caffe, data_module):
    solver_path = write_solver(data_module, "fixed")
    cs = caffe.SGDSolver(str(solver_path))
    cs.net.save(str(data_module / "w.caffemodel"))
    net = TorchNet(data_module / "net.prototxt", "TRAIN")
    assert load_caffemodel(net, data_module / "w.caffemodel") == ["conv1", "frozen", "deconv"]


def _tiny_seg_db(path, n_videos=3, L=8, H=20, W=20):
    from data_prep.db import ClipWriter
    rng = np.random.default_rng(5)
    w = ClipWriter(path, {"frames": ((3, L, H, W), "uint8"), "label": ((1, L, H, W), "uint8")})
    for u in range(n_videos):
        clips = []
        for c in range(2):
            lab = rng.integers(0, 4, (1, L, H, W)).astype(np.uint8)
            lab[rng.random(lab.shape) < 0.1] = 255
            clips.append((c * L, {"frames": rng.integers(0, 256, (3, L, H, W)).astype(np.uint8),
                                  "label": lab}))
        w.put_unit(u, f"video{u}", clips)
    w.finalize({"dataset": "tiny", "split": "train", "task": "seg"})
    w.close()


def test_clip_data_layer_training_matches_pycaffe(caffe, tmp_path, monkeypatch):
    """The real data path: ClipDataLayer over an LMDB clip database (random crops and
    mirrors from its seed) feeds pycaffe's solver and the torch Trainer the same batches;
    a torch run resumed from its snapshot continues the same data stream."""
    monkeypatch.delenv("V2V_START_ITER", raising=False)
    _tiny_seg_db(tmp_path / "db")
    # a byte copy for the torch side: py-lmdb refuses to open one environment twice in a process
    shutil.copytree(tmp_path / "db", tmp_path / "db_torch")
    for db, tag in (("db", ""), ("db_torch", "_torch")):
        ps = json.dumps({"db": str(tmp_path / db), "task": "seg", "batch_size": 2, "crop": 16,
                         "length": 4, "mirror": True, "train": True, "mean": None, "scale": 0.01,
                         "seed": 11, "prefetch": 1})
        net = NET.split("layer {", 2)
        text = ('name: "clip"\nlayer { name: "data" type: "Python" top: "data" top: "label" '
                'python_param { module: "data_prep.layers" layer: "ClipDataLayer" '
                f"param_str: '{ps}' }} }}\n"
                "layer {" + net[2])
        (tmp_path / f"net{tag}.prototxt").write_text(text)
        (tmp_path / f"solver{tag}.prototxt").write_text(
            f'net: "{tmp_path}/net{tag}.prototxt"\nbase_lr: 0.5\nlr_policy: "fixed"\nmomentum: 0.9\n'
            f'weight_decay: 0.01\nmax_iter: 10\ndisplay: 0\nsnapshot: 0\n')
    cs = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    cs.net.save(str(tmp_path / "w0.caffemodel"))
    cs.step(6)
    tr = Trainer(tmp_path / "solver_torch.prototxt", weights=tmp_path / "w0.caffemodel", log=lambda *a: None)
    assert tr.net.blob_shapes["data"] == (2, 3, 4, 16, 16)
    tr.step(3)
    tr.snapshot(str(tmp_path / "mid"))
    tr.step(3)
    for name, blobs in tr.net.params.items():
        for i, p in enumerate(blobs):
            assert rel(cs.net.params[name][i].data, p.detach().numpy()) < 1e-4, name
    tr2 = Trainer(tmp_path / "solver_torch.prototxt", resume=tmp_path / "mid_iter_3.solverstate",
                  log=lambda *a: None)
    tr2.step(3)
    for name, blobs in tr.net.params.items():
        for a, b in zip(blobs, tr2.net.params[name]):
            assert torch.equal(a, b), name


def test_test_pass_matches_caffe_test_net(caffe, data_module):
    solver_path = write_solver(data_module, "fixed",
                               extra="test_iter: 3\ntest_interval: 100\ntest_initialization: false")
    cs = caffe.get_solver(str(solver_path))
    cs.net.save(str(data_module / "w0.caffemodel"))
    tn = cs.test_nets[0]
    tn.share_with(cs.net)   # what Solver::TestAll does before each test
    losses = [float(tn.forward()["loss"]) for _ in range(3)]
    tr = Trainer(solver_path, weights=data_module / "w0.caffemodel", log=lambda *a: None)
    means = tr.test()
    assert abs(means["loss"] - np.mean(losses)) < 1e-5 * abs(np.mean(losses))
    # the test data layer persists: the next pass continues in the stream, as in Caffe
    losses2 = [float(tn.forward()["loss"]) for _ in range(3)]
    assert abs(tr.test()["loss"] - np.mean(losses2)) < 1e-5 * abs(np.mean(losses2))


@pytest.mark.slow
def test_channels_last_bf16_and_compile_paths_on_cpu(caffe, data_module):
    """The GPU options run on CPU too: channels_last_3d training is exact; bf16 autocast is
    close; torch.compile gives the eager result."""
    from torch_runtime.runtime import RunOptions
    solver_path = write_solver(data_module, "step")
    cs = caffe.get_solver(str(solver_path))
    cs.net.save(str(data_module / "w0.caffemodel"))

    def train(**kw):
        sys.modules.pop("torch_solver_data", None)
        tr = Trainer(solver_path, weights=data_module / "w0.caffemodel", log=lambda *a: None,
                     opts=RunOptions(device="cpu", **kw))
        tr.feed.prefetch = 0
        losses = tr.step(3)
        return losses, {k: [p.detach().float().contiguous().numpy() for p in v]
                        for k, v in tr.net.params.items()}

    ref_l, ref_w = train()
    cl_l, cl_w = train(channels_last=True)
    bf_l, _ = train(precision="bf16")
    np.testing.assert_allclose(cl_l, ref_l, rtol=1e-5)
    for k in ref_w:
        for a, b in zip(ref_w[k], cl_w[k]):
            assert rel(a, b) < 1e-5
    np.testing.assert_allclose(bf_l, ref_l, rtol=3e-2)
    co_l, co_w = train(compile=True)
    np.testing.assert_allclose(co_l, ref_l, rtol=1e-5)
    for k in ref_w:
        for a, b in zip(ref_w[k], co_w[k]):
            assert rel(a, b) < 1e-4
