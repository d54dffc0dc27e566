"""models.pylayers in the real engine: HuberLoss, ClippedEuclideanLoss and
TrilinearUpsample against NumPy / scipy references and finite differences."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from models import pylayers


def _pair_net(layer, param=None, shape=(2, 2, 2, 3, 3)):
    ps = f" param_str: '{json.dumps(param)}'" if param is not None else ""
    dims = " ".join(f"dim: {d}" for d in shape)
    return f"""force_backward: true
layer {{ name: "in" type: "Input" top: "p" top: "t" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "loss" type: "Python" bottom: "p" bottom: "t" top: "loss" loss_weight: 1
  python_param {{ module: "models.pylayers" layer: "{layer}"{ps} }} }}
"""


def _huber_ref(d, variant):
    a = np.abs(d)
    return np.where(a <= 1, 0.5 * d * d, a - 0.5 if variant == "standard" else a)


@pytest.mark.parametrize("variant", ["paper", "standard"])
def test_huber_forward_backward(make_net, rng, variant):
    net = make_net(_pair_net("HuberLoss", {"variant": variant}))
    p = rng.normal(0, 1.5, net.blobs["p"].data.shape).astype(np.float32)
    t = rng.normal(0, 1.0, p.shape).astype(np.float32)
    net.blobs["p"].data[...] = p
    net.blobs["t"].data[...] = t
    loss = float(net.forward()["loss"])
    d = p.astype(np.float64) - t
    N = p.shape[0]
    assert abs(np.abs(d) > 1).sum() > 0 and (np.abs(d) <= 1).sum() > 0
    assert loss == pytest.approx(_huber_ref(d, variant).sum() / N, rel=1e-5)
    net.backward()
    g = np.clip(d, -1, 1) / N
    np.testing.assert_allclose(net.blobs["p"].diff, g, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.blobs["t"].diff, -g, rtol=1e-5, atol=1e-7)
    assert net.blobs["loss"].data.shape == ()


def test_huber_matches_euclidean_for_small_errors(make_net, rng):
    """Same summation as Caffe's EuclideanLoss (Σ d² / 2N) when every |d| ≤ 1."""
    text = _pair_net("HuberLoss") + (  # EuclideanLoss aborts on 5D (legacy num()): flatten
        'layer { name: "fp" type: "Flatten" bottom: "p" top: "fp" }\n'
        'layer { name: "ft" type: "Flatten" bottom: "t" top: "ft" }\n'
        'layer { name: "eu" type: "EuclideanLoss" bottom: "fp" bottom: "ft" top: "eu" }\n')
    net = make_net(text)
    net.blobs["p"].data[...] = rng.uniform(-0.4, 0.4, net.blobs["p"].data.shape)
    net.blobs["t"].data[...] = rng.uniform(-0.4, 0.4, net.blobs["p"].data.shape)
    out = net.forward()
    assert float(out["loss"]) == pytest.approx(float(out["eu"]), rel=1e-5)


def test_clipped_euclidean_is_release_voxel_custom_loss(make_net, rng):
    net = make_net(_pair_net("ClippedEuclideanLoss"))
    p = rng.normal(0, 1.5, net.blobs["p"].data.shape).astype(np.float32)
    t = rng.normal(0, 1.0, p.shape).astype(np.float32)
    net.blobs["p"].data[...] = p
    net.blobs["t"].data[...] = t
    loss = float(net.forward()["loss"])
    c = np.clip(p.astype(np.float64) - t, -1, 1)
    assert loss == pytest.approx((c ** 2).sum() / c.size, rel=1e-5)
    net.backward()
    np.testing.assert_allclose(net.blobs["p"].diff, c / p.shape[0], rtol=1e-5, atol=1e-7)


def test_loss_params_checked(make_net):
    with pytest.raises(Exception, match="variant|unknown"):
        make_net(_pair_net("HuberLoss", {"varient": "paper"}))
    with pytest.raises(ValueError, match="variant"):
        pylayers.HuberLoss.infer_top_shapes('{"variant": "x"}', [(1, 2), (1, 2)])
    with pytest.raises(ValueError, match="differ"):
        pylayers.HuberLoss.infer_top_shapes("", [(1, 2, 3), (1, 2, 4)])
    assert pylayers.HuberLoss.infer_top_shapes("", [(1, 2, 3), (1, 2, 3)]) == [()]


# --------------------------------------------------------------------------- upsampling
def _up_net(in_shape, param=None, ref_shape=None):
    dims = " ".join(f"dim: {d}" for d in in_shape)
    ref = ""
    bottoms = 'bottom: "x"'
    if ref_shape:
        rd = " ".join(f"dim: {d}" for d in ref_shape)
        ref = f'layer {{ name: "r" type: "Input" top: "ref" input_param {{ shape {{ {rd} }} }} }}\n'
        bottoms += ' bottom: "ref"'
    ps = f" param_str: '{json.dumps(param)}'" if param is not None else ""
    return f"""force_backward: true
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
{ref}layer {{ name: "up" type: "Python" {bottoms} top: "y"
  python_param {{ module: "models.pylayers" layer: "TrilinearUpsample"{ps} }} }}
"""


@pytest.mark.parametrize("factor", [(2, 4, 4), (4, 8, 8), (8, 16, 16)])
def test_trilinear_matches_scipy_zoom(make_net, rng, factor):
    shape = (1, 2, 2, 3, 4)
    net = make_net(_up_net(shape, {"factor": list(factor)}))
    x = rng.normal(size=shape).astype(np.float32)
    net.blobs["x"].data[...] = x
    y = net.forward()["y"]
    ref = ndimage.zoom(x.astype(np.float64), (1, 1) + factor, order=1, grid_mode=True,
                       mode="nearest")
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_trilinear_align_corners_matches_zoom_default(make_net, rng):
    shape = (2, 1, 3, 4, 5)
    net = make_net(_up_net(shape, {"size": [5, 7, 9], "align_corners": True}))
    x = rng.normal(size=shape).astype(np.float32)
    net.blobs["x"].data[...] = x
    y = net.forward()["y"]
    ref = ndimage.zoom(x.astype(np.float64), (1, 1, 5 / 3, 7 / 4, 9 / 5), order=1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_trilinear_to_reference_size_and_exact_on_linear_ramps(make_net):
    """Size from a second bottom (as ConvNb+Up); a linear ramp stays linear inside."""
    net = make_net(_up_net((1, 1, 2, 7, 7), None, ref_shape=(1, 3, 16, 112, 112)))
    z, yy, xx = np.meshgrid(np.arange(2), np.arange(7), np.arange(7), indexing="ij")
    net.blobs["x"].data[0, 0] = 3 * z + 2 * yy - xx
    out = net.forward()["y"]
    assert out.shape == (1, 1, 16, 112, 112)
    # output voxel centre j maps to input coordinate (j + ½)/f − ½
    jz, jy, jx = 7, 50, 60
    sz, sy, sx = (jz + .5) / 8 - .5, (jy + .5) / 16 - .5, (jx + .5) / 16 - .5
    assert out[0, 0, jz, jy, jx] == pytest.approx(3 * sz + 2 * sy - sx, abs=1e-4)


def test_trilinear_gradient_finite_differences(make_net, rng):
    shape = (1, 2, 2, 3, 3)
    net = make_net(_up_net(shape, {"factor": [2, 2, 3]}))
    x = rng.normal(size=shape)
    G = rng.normal(size=(1, 2, 4, 6, 9))

    def f(xv):
        net.blobs["x"].data[...] = xv
        return float((net.forward()["y"].astype(np.float64) * G).sum())
    f(x)
    net.blobs["y"].diff[...] = G
    net.backward()
    g = net.blobs["x"].diff.astype(np.float64).copy()
    eps = 1e-2
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        num[i] = (f(x + e) - f(x - e)) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-3, atol=1e-3)


def test_trilinear_params_checked():
    up = pylayers.TrilinearUpsample.infer_top_shapes
    assert up('{"factor": 2}', [(1, 8, 2, 7, 7)]) == [(1, 8, 4, 14, 14)]
    assert up("", [(1, 8, 2, 7, 7), (1, 3, 16, 112, 112)]) == [(1, 8, 16, 112, 112)]
    with pytest.raises(ValueError, match="exactly one"):
        up('{"factor": 2}', [(1, 8, 2, 7, 7), (1, 3, 16, 112, 112)])
    with pytest.raises(ValueError, match="5D"):
        up('{"factor": 2}', [(1, 8, 7, 7)])
    with pytest.raises(ValueError, match="unknown"):
        up('{"scale": 2}', [(1, 8, 2, 7, 7)])
