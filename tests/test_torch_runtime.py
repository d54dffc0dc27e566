"""Torch runtime against pycaffe on small nets: every layer type, border windows, groups,
Python layers, caffemodel round trips and errors (CPU, float32, tolerance 1e-4 relative)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch runtime tests need torch==2.13.0 (make setup-torch)")

from torch_runtime import TorchNet, UnsupportedLayer, load_caffemodel, save_caffemodel  # noqa: E402
from torch_runtime.parity import compare_with_caffe  # noqa: E402

TOL = 1e-4


def inp(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def conv3d(name, bottom, out, kd, k, ts=1, s=1, tp=0, p=0, group=1, deconv=False, bias=True, top=None,
           param=""):
    t = "Deconvolution3D" if deconv else "Convolution3D"
    return (f'layer {{ name: "{name}" type: "{t}" bottom: "{bottom}" top: "{top or name}" {param} '
            f"convolution3d_param {{ num_output: {out} kernel_depth: {kd} kernel_size: {k} "
            f"temporal_stride: {ts} stride: {s} temporal_pad: {tp} pad: {p} group: {group} "
            f"bias_term: {str(bias).lower()} }} }}\n")


def pool3d(name, bottom, kd, k, ts, s, tp=0, p=0, method="MAX"):
    return (f'layer {{ name: "{name}" type: "Pooling3D" bottom: "{bottom}" top: "{name}" '
            f"pooling3d_param {{ pool: {method} kernel_depth: {kd} kernel_size: {k} "
            f"temporal_stride: {ts} stride: {s} temporal_pad: {tp} pad: {p} }} }}\n")


def relu(b):
    return f'layer {{ name: "relu_{b}" type: "ReLU" bottom: "{b}" top: "{b}" }}\n'


def check(text, tmp_path, phase="TEST", seeds=(0, 1, 2, 3), **kw):
    last = None
    for seed in seeds:
        rep = compare_with_caffe(text, phase, seed=seed, tmpdir=tmp_path, **kw)
        last = rep
        if rep.flips == 0:
            break
    assert last.flips == 0, "every seed hit a ReLU/max-pool decision flip"
    assert last.max_rel_output < TOL, last.worst()
    assert last.max_rel_grad < TOL, last.worst()
    return last


def test_3d_layers_border_windows_groups_and_softmax_loss(tmp_path):
    # 5×9×9 input: MAX pool 2/2 leaves a clipped border window (ceil mode) on every axis;
    # AVE pool with pad 1 divides by windows clipped to in + pad; group conv and deconv.
    text = (inp("data", (1, 4, 5, 9, 9)) + inp("label", (1, 1, 2, 6, 6)) +
            conv3d("c1", "data", 6, 3, 3, tp=1, p=1) + relu("c1") +
            pool3d("p1", "c1", 2, 2, 2, 2) +
            conv3d("c2", "p1", 6, 1, 3, p=1, group=2) +
            pool3d("pa", "c2", 2, 3, 1, 2, p=1, method="AVE") +
            conv3d("d1", "pa", 3, 3, 4, ts=1, s=2, tp=1, p=1, deconv=True, group=3) +
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "d1" bottom: "label" top: "loss" '
            'loss_param { ignore_label: 2 normalization: VALID } }\n')
    rep = check(text, tmp_path, "TRAIN", input_shapes={})
    names = [n for k, n, _ in rep.rows if k == "grad"]
    assert set(names) == {"c1[0]", "c1[1]", "c2[0]", "c2[1]", "d1[0]", "d1[1]"}


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling3d_wide_padding_fallback(tmp_path, method):
    # pad 2 with kernel 3 is legal in Caffe but not in torch's pooling: explicit padding path
    text = (inp("data", (1, 2, 5, 7, 8)) + conv3d("c", "data", 3, 1, 1) +
            pool3d("p", "c", 3, 3, 2, 2, tp=2, p=2, method=method) +
            pool3d("q", "c", 2, 3, 1, 3, tp=1, p=1, method=method))
    check(text, tmp_path, "TEST", input_shapes={})


@pytest.mark.parametrize("norm", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_softmax_loss_normalizations(tmp_path, norm):
    text = (inp("data", (2, 3, 2, 4, 4)) + inp("label", (2, 1, 2, 4, 4)) +
            conv3d("c", "data", 5, 1, 1) +
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "c" bottom: "label" top: "loss" '
            f'loss_param {{ ignore_label: 4 normalization: {norm} }} }}\n'
            'layer { name: "acc" type: "Accuracy" bottom: "c" bottom: "label" top: "acc" '
            'accuracy_param { ignore_label: 4 } }\n')
    check(text, tmp_path, "TRAIN", input_shapes={})


def test_2d_layers_crop_reshape_concat_softmax(tmp_path):
    text = (inp("data", (2, 3, 11, 11)) +
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
            'num_output: 4 kernel_size: 3 pad: 1 group: 1 } }\n' + relu("c") +
            'layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX '
            'kernel_size: 3 stride: 2 pad: 1 } }\n'
            'layer { name: "pa" type: "Pooling" bottom: "c" top: "pa" pooling_param { pool: AVE '
            'kernel_size: 3 stride: 2 pad: 1 } }\n'
            'layer { name: "cat" type: "Concat" bottom: "p" bottom: "pa" top: "cat" }\n'
            'layer { name: "g" type: "Convolution" bottom: "cat" top: "g" convolution_param { '
            'num_output: 4 kernel_size: 3 group: 2 dilation: 1 } }\n'
            'layer { name: "d" type: "Deconvolution" bottom: "g" top: "d" convolution_param { '
            'num_output: 2 kernel_size: 4 stride: 2 pad: 1 } }\n'
            'layer { name: "cr" type: "Crop" bottom: "d" bottom: "g" top: "cr" crop_param { axis: 2 offset: 1 } }\n'
            'layer { name: "sg" type: "Sigmoid" bottom: "cr" top: "sg" }\n'
            'layer { name: "th" type: "TanH" bottom: "cr" top: "th" }\n'
            'layer { name: "el" type: "Eltwise" bottom: "sg" bottom: "th" bottom: "cr" top: "el" '
            'eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1 } }\n'
            'layer { name: "em" type: "Eltwise" bottom: "el" bottom: "cr" top: "em" '
            'eltwise_param { operation: PROD } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "em" top: "ip" inner_product_param { num_output: 7 } }\n'
            'layer { name: "ipr" type: "ReLU" bottom: "ip" top: "ip" relu_param { negative_slope: 0.1 } }\n'
            'layer { name: "r" type: "Reshape" bottom: "ip" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }\n'
            'layer { name: "pw" type: "Power" bottom: "r" top: "pw" power_param { scale: 3 shift: 0.5 } }\n'
            'layer { name: "sm" type: "Softmax" bottom: "pw" top: "sm" }\n'
            'layer { name: "drop" type: "Dropout" bottom: "sm" top: "sm" dropout_param { dropout_ratio: 0.5 } }\n')
    check(text, tmp_path, "TEST", input_shapes={})


def test_euclidean_flatten_and_python_losses(tmp_path):
    text = (inp("data", (2, 3, 4, 8, 8)) + inp("label", (2, 2, 4, 8, 8)) +
            conv3d("c", "data", 2, 3, 3, tp=1, p=1) +
            'layer { name: "fp" type: "Flatten" bottom: "c" top: "fp" }\n'
            'layer { name: "fl" type: "Flatten" bottom: "label" top: "fl" }\n'
            'layer { name: "eu" type: "EuclideanLoss" bottom: "fp" bottom: "fl" top: "eu" loss_weight: 0.5 }\n'
            'layer { name: "hu" type: "Python" bottom: "c" bottom: "label" top: "hu" loss_weight: 1 '
            'python_param { module: "models.pylayers" layer: "HuberLoss" param_str: \'{"variant": "paper"}\' } }\n'
            'layer { name: "hs" type: "Python" bottom: "c" bottom: "label" top: "hs" loss_weight: 0.3 '
            'python_param { module: "models.pylayers" layer: "HuberLoss" param_str: \'{"variant": "standard"}\' } }\n'
            'layer { name: "ce" type: "Python" bottom: "c" bottom: "label" top: "ce" loss_weight: 2 '
            'python_param { module: "models.pylayers" layer: "ClippedEuclideanLoss" } }\n')
    check(text, tmp_path, "TRAIN", input_shapes={})


@pytest.mark.parametrize("ps", ['{"factor": [2, 4, 4]}', '{"size": [6, 10, 12], "align_corners": true}', "REF"])
def test_trilinear_upsample(tmp_path, ps):
    ref = ps == "REF"
    text = (inp("data", (1, 2, 4, 8, 8)) + conv3d("c", "data", 3, 3, 3, s=2, ts=2, tp=1, p=1) +
            'layer { name: "up" type: "Python" bottom: "c" ' + ('bottom: "data" ' if ref else "") +
            'top: "up" python_param { module: "models.pylayers" layer: "TrilinearUpsample" '
            f"param_str: '{'{}' if ref else ps}' }} }}\n")
    check(text, tmp_path, "TEST", input_shapes={})


def test_numpy_fallback_matches_native(tmp_path):
    """An unknown Python layer runs its own NumPy code; here the Huber layer both ways."""
    text = (inp("data", (2, 3, 2, 4, 4)) + inp("label", (2, 3, 2, 4, 4)) +
            'layer { name: "hu" type: "Python" bottom: "data" bottom: "label" top: "hu" loss_weight: 1 '
            'python_param { module: "models.pylayers" layer: "HuberLoss" } }\n')
    a = TorchNet(text, "TRAIN", native_python=True)
    b = TorchNet(text, "TRAIN", native_python=False)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 2, 4, 4, generator=g) * 2).requires_grad_()
    y = torch.randn(2, 3, 2, 4, 4, generator=g)
    la = a({"data": x, "label": y}).loss
    (ga,) = torch.autograd.grad(la, x)
    lb = b({"data": x, "label": y}).loss
    (gb,) = torch.autograd.grad(lb, x)
    assert abs(la.item() - lb.item()) < 1e-5 * abs(lb.item())
    assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-7)


def test_caffemodel_round_trip_loads_in_caffe(tmp_path, caffe):
    text = (inp("data", (1, 3, 4, 8, 8)) + conv3d("c1", "data", 4, 3, 3, tp=1, p=1) +
            conv3d("d1", "c1", 2, 4, 4, ts=2, s=2, tp=1, p=1, deconv=True) +
            'layer { name: "c2" type: "Convolution" bottom: "d1" top: "c2" convolution_param { '
            'num_output: 3 kernel_size: 1 axis: 1 } }\n')
    (tmp_path / "n.prototxt").write_text(text)
    net = TorchNet(tmp_path / "n.prototxt")
    torch.manual_seed(0)
    with torch.no_grad():
        for blobs in net.params.values():
            for p in blobs:
                p.normal_()
    save_caffemodel(net, tmp_path / "w.caffemodel")
    cnet = caffe.Net(str(tmp_path / "n.prototxt"), str(tmp_path / "w.caffemodel"), caffe.TEST)
    for name, blobs in net.params.items():
        for i, p in enumerate(blobs):
            assert cnet.params[name][i].data.shape == tuple(p.shape)
            np.testing.assert_array_equal(cnet.params[name][i].data, p.detach().numpy())
    assert net.params["c1"][1].shape == (1, 1, 1, 1, 4)
    assert net.params["d1"][0].shape == (4, 2, 4, 4, 4)
    x = torch.randn(1, 3, 4, 8, 8)
    cnet.blobs["data"].data[...] = x.numpy()
    cout = cnet.forward()["c2"]
    np.testing.assert_allclose(net(x)["c2"].detach().numpy(), cout, rtol=1e-4, atol=1e-4)
    net2 = TorchNet(tmp_path / "n.prototxt")
    assert load_caffemodel(net2, tmp_path / "w.caffemodel", strict=True) == ["c1", "d1", "c2"]


def test_caffemodel_shape_mismatch_is_an_error(tmp_path):
    a = TorchNet(inp("data", (1, 3, 4, 8, 8)) + conv3d("c1", "data", 4, 3, 3))
    b = TorchNet(inp("data", (1, 3, 4, 8, 8)) + conv3d("c1", "data", 5, 3, 3))
    save_caffemodel(a, tmp_path / "a.caffemodel")
    with pytest.raises(ValueError, match="c1"):
        load_caffemodel(b, tmp_path / "a.caffemodel")


def test_unsupported_layer_names_layer_and_type():
    with pytest.raises(UnsupportedLayer, match=r"'lrn1'.*'LRN'"):
        TorchNet(inp("data", (1, 3, 8, 8)) + 'layer { name: "lrn1" type: "LRN" bottom: "data" top: "l" }\n')


def test_frozen_params_and_phase_rules():
    text = (inp("data", (1, 3, 4, 8, 8)) +
            conv3d("c1", "data", 4, 3, 3, param="param { lr_mult: 0 } param { lr_mult: 0 }") +
            conv3d("c2", "c1", 4, 3, 3, tp=1, p=1,
                   param="param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }") +
            'layer { name: "x" type: "ReLU" bottom: "c2" top: "c2" include { phase: TRAIN } }\n')
    net = TorchNet(text, "TEST")
    assert [s[1:4] for s in net.param_specs] == [(0.0, 1.0, "c1"), (0.0, 1.0, "c1"),
                                                  (1.0, 1.0, "c2"), (2.0, 0.0, "c2")]
    assert not net.params["c1"][0].requires_grad and net.params["c2"][0].requires_grad
    assert [n for _, n, _, _ in [(k, *p[:1], 0, 0) for k, *p in net.plan]] and len(net.plan) == 3
    assert len(TorchNet(text, "TRAIN").plan) == 4
    assert net.output_names == ["c2"]


def test_data_layer_without_shapes_asks_for_them():
    text = ('layer { name: "d" type: "Python" top: "data" python_param { module: "json" layer: "JSONDecoder" } }\n'
            + conv3d("c1", "data", 4, 3, 3))
    with pytest.raises(ValueError, match="input_shapes"):
        TorchNet(text, "TRAIN")
    net = TorchNet(text, "TRAIN", input_shapes={"data": (1, 2, 4, 8, 8)})
    assert net.blob_shapes["c1"] == (1, 4, 2, 6, 6)


def test_label_out_of_range_is_an_error():
    text = (inp("data", (1, 3, 2, 4, 4)) + inp("label", (1, 1, 2, 4, 4)) + conv3d("c", "data", 4, 1, 1) +
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "c" bottom: "label" top: "loss" '
            'loss_param { ignore_label: 255 } }\n')
    net = TorchNet(text, "TRAIN")
    lab = torch.zeros(1, 1, 2, 4, 4)
    lab[0, 0, 0, 0, 0] = 255
    net({"data": torch.randn(1, 3, 2, 4, 4), "label": lab})     # void is fine
    lab[0, 0, 1, 1, 1] = 4
    with pytest.raises(ValueError, match=r"'loss'.*outside \[0, 4\)"):
        net({"data": torch.randn(1, 3, 2, 4, 4), "label": lab})


def test_clear_errors_for_paths_and_input_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.prototxt"):
        TorchNet(str(tmp_path / "nope.prototxt"))
    with pytest.raises(ValueError, match="clip"):
        TorchNet(inp("data", (1, 3, 4, 8, 8)) + conv3d("c1", "data", 4, 3, 3), input_shapes={"clip": (1, 3, 4, 8, 8)})
