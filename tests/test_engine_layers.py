"""Our C++ 3D layers (Convolution3D, Deconvolution3D, Pooling3D) in the real engine,
against independent NumPy references (tests/ref3d.py) and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

import ref3d


def input_layer(shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'


def conv3d_net(shape, out, kd, k, ts=1, s=1, tp=0, p=0, group=1, bias=True, deconv=False,
               wfill='type: "gaussian" std: 0.1', bfill='type: "gaussian" std: 0.1'):
    t = "Deconvolution3D" if deconv else "Convolution3D"
    return ("force_backward: true\n" + input_layer(shape) +
            f'layer {{ name: "l" type: "{t}" bottom: "data" top: "y" convolution3d_param {{ '
            f"num_output: {out} kernel_depth: {kd} kernel_size: {k} temporal_stride: {ts} "
            f"stride: {s} temporal_pad: {tp} pad: {p} group: {group} bias_term: {str(bias).lower()} "
            f"weight_filler {{ {wfill} }} bias_filler {{ {bfill} }} }} }}\n")


def pool3d_net(shape, kd, k, ts, s, tp=0, p=0, method="MAX"):
    return ("force_backward: true\n" + input_layer(shape) +
            f'layer {{ name: "l" type: "Pooling3D" bottom: "data" top: "y" pooling3d_param {{ '
            f"pool: {method} kernel_depth: {kd} kernel_size: {k} temporal_stride: {ts} stride: {s} "
            f"temporal_pad: {tp} pad: {p} }} }}\n")


def run(net, x, seed=0):
    """Forward x; backward a random top diff R (objective sum(y*R)); return y, R, grads."""
    net.blobs["data"].data[...] = x
    net.forward()
    y = net.blobs["y"].data.copy()
    R = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
    for blobs in net.params.values():
        for b in blobs:
            b.diff[...] = 0
    net.blobs["y"].diff[...] = R
    net.backward()
    grads = {"data": net.blobs["data"].diff.copy()}
    if "l" in net.params:
        grads.update({f"p{i}": b.diff.copy() for i, b in enumerate(net.params["l"])})
    return y, R, grads


def objective(net, x):
    net.blobs["data"].data[...] = x
    net.forward()
    return net.blobs["y"].data.astype(np.float64).copy()


def fd_check(net, x, R, grads, rng, n=12, eps=1e-2, tol=2e-3):
    """Central finite differences of sum(y*R) w.r.t. random entries of x and the params."""
    def f():
        return float((objective(net, x) * R).sum())

    targets = [("data", x)]
    if "l" in net.params:
        targets += [(f"p{i}", b.data) for i, b in enumerate(net.params["l"])]
    for name, arr in targets:
        flat = arr.reshape(-1)
        for idx in rng.choice(flat.size, size=min(n, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            fp = f()
            flat[idx] = old - eps
            fm = f()
            flat[idx] = old
            num = (fp - fm) / (2 * eps)
            ana = grads[name].reshape(-1)[idx]
            assert abs(num - ana) <= tol * max(1.0, abs(num)), (name, idx, num, ana)


CONV_CASES = [
    # shape (N,C,L,H,W), out, kd, k, ts, s, tp, p, group
    ((1, 3, 5, 7, 6), 4, 3, 3, 1, 1, 1, 1, 1),      # C3D's 3x3x3 / 1 / 1
    ((2, 4, 7, 9, 8), 6, 2, 3, 2, 2, 1, 0, 2),      # odd sizes, strides, group 2
    ((3, 2, 4, 5, 5), 3, 1, 1, 1, 1, 0, 0, 1),      # 1x1x1, batch 3
    ((2, 3, 6, 11, 10), 5, 3, 5, 3, 3, 2, 2, 1),    # big pads and strides
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution3d_matches_reference(make_net, rng, case):
    shape, out, kd, k, ts, s, tp, p, g = case
    net = make_net(conv3d_net(shape, out, kd, k, ts, s, tp, p, g))
    w, b = net.params["l"][0].data, net.params["l"][1].data
    assert w.shape == (out, shape[1] // g, kd, k, k)
    assert b.shape == (1, 1, 1, 1, out)
    x = rng.standard_normal(shape).astype(np.float32)
    y, R, grads = run(net, x)
    ref = ref3d.conv3d(x, w, b.reshape(-1), (ts, s, s), (tp, p, p), g)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    fd_check(net, x, R, grads, rng)


DECONV_CASES = [
    ((1, 4, 2, 3, 3), 3, 4, 8, 2, 4, 1, 2, 1),      # V2V deconv3: L 4/2/1, H,W 8/4/2
    ((2, 4, 2, 3, 4), 4, 4, 4, 2, 2, 1, 1, 2),      # deconv5/4: 4/2/1, group 2
    ((1, 3, 3, 4, 3), 2, 3, 3, 1, 2, 0, 1, 1),      # odd mix
]


@pytest.mark.parametrize("case", DECONV_CASES)
def test_deconvolution3d_matches_reference(make_net, rng, case):
    shape, out, kd, k, ts, s, tp, p, g = case
    net = make_net(conv3d_net(shape, out, kd, k, ts, s, tp, p, g, deconv=True))
    w, b = net.params["l"][0].data, net.params["l"][1].data
    assert w.shape == (shape[1], out // g, kd, k, k)
    x = rng.standard_normal(shape).astype(np.float32)
    y, R, grads = run(net, x)
    ref = ref3d.deconv3d(x, w, b.reshape(-1), (ts, s, s), (tp, p, p), g)
    assert y.shape == ref.shape == (shape[0], out, (shape[2] - 1) * ts - 2 * tp + kd,
                                    (shape[3] - 1) * s - 2 * p + k, (shape[4] - 1) * s - 2 * p + k)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    fd_check(net, x, R, grads, rng)


def test_deconvolution3d_undoes_v2v_pooling_sizes(make_net):
    """The paper's deconv3 reading that the release uses: 28x28x8 -> 112x112x16."""
    net = make_net(conv3d_net((1, 2, 8, 28, 28), 2, 4, 8, 2, 4, 1, 2, deconv=True))
    assert net.blobs["y"].data.shape == (1, 2, 16, 112, 112)


POOL_CASES = [
    # shape, kd, k, ts, s, tp, p
    ((1, 2, 5, 7, 7), 2, 2, 2, 2, 0, 0),   # ceil mode: border windows of size 1
    ((2, 3, 4, 6, 5), 1, 2, 1, 2, 0, 0),   # C3D pool1 (1x2x2), odd W
    ((1, 2, 7, 9, 8), 3, 3, 2, 2, 1, 1),   # padded, overlapping windows
    ((3, 1, 3, 5, 4), 3, 3, 3, 3, 0, 0),   # one window in time, clipped in space
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling3d_matches_reference(make_net, rng, case, method):
    shape, kd, k, ts, s, tp, p = case
    net = make_net(pool3d_net(shape, kd, k, ts, s, tp, p, method))
    # distinct values so that max pooling has no ties
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32) / 7.0
    y, R, grads = run(net, x)
    ref = ref3d.pool3d(x, (kd, k, k), (ts, s, s), (tp, p, p), method.lower())
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    fd_check(net, x, R, grads, rng, eps=0.05, tol=2e-3)  # gaps between values are 1/7


def test_pooling3d_ceil_mode_border_window(make_net):
    """L=5 with kernel 2 / stride 2 gives 3 outputs; the last window holds frame 4 only."""
    net = make_net(pool3d_net((1, 1, 5, 2, 2), 2, 2, 2, 2))
    x = np.arange(20, dtype=np.float32).reshape(1, 1, 5, 2, 2)
    net.blobs["data"].data[...] = x
    net.forward()
    y = net.blobs["y"].data
    assert y.shape == (1, 1, 3, 1, 1)
    np.testing.assert_array_equal(y.reshape(-1), [7, 15, 19])


def test_mainline_nd_convolution_agrees_with_convolution3d(make_net, rng):
    shape = (2, 3, 6, 8, 7)
    text3d = conv3d_net(shape, 4, 3, 3, 1, 2, 1, 1)
    textnd = ("force_backward: true\n" + input_layer(shape) +
              'layer { name: "l" type: "Convolution" bottom: "data" top: "y" convolution_param { '
              "num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 3 stride: 1 stride: 2 "
              "stride: 2 pad: 1 pad: 1 pad: 1 } }\n")
    a, b = make_net(text3d), make_net(textnd)
    b.params["l"][0].data[...] = a.params["l"][0].data
    b.params["l"][1].data[...] = a.params["l"][1].data.reshape(-1)
    x = rng.standard_normal(shape).astype(np.float32)
    ya, _, ga = run(a, x)
    yb, _, gb = run(b, x)
    np.testing.assert_allclose(ya, yb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ga["data"], gb["data"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ga["p0"], gb["p0"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ga["p1"].reshape(-1), gb["p1"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("filler,check", [
    ('type: "gaussian" std: 0.01', lambda w, fan_in: abs(w.std() - 0.01) < 0.001),
    ('type: "xavier"', lambda w, fan_in: np.abs(w).max() <= np.sqrt(3.0 / fan_in) + 1e-6
     and np.abs(w).max() > 0.8 * np.sqrt(3.0 / fan_in)),
    ('type: "msra"', lambda w, fan_in: abs(w.std() - np.sqrt(2.0 / fan_in)) < 0.1 * np.sqrt(2.0 / fan_in)),
    ('type: "constant" value: 0.5', lambda w, fan_in: np.all(w == 0.5)),
])
def test_fillers_on_5d_weights(make_net, filler, check):
    net = make_net(conv3d_net((1, 16, 4, 6, 6), 32, 3, 3, 1, 1, 1, 1, wfill=filler,
                              bfill='type: "constant" value: 1'))
    w = net.params["l"][0].data
    assert w.shape == (32, 16, 3, 3, 3)
    assert check(w, 16 * 27), filler
    assert np.all(net.params["l"][1].data == 1)
