"""models.layerspec, the one spec per layer type: against the engine (pycaffe), the torch
runtime and C3D-v1.1's formulas written out here; its errors, the same in every reader."""
from __future__ import annotations

import math

import pytest
import torch
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st

from models import validate
from models.engine import pb2
from models.layerspec import SPECS, LayerSpecError, conv_out, deconv_out, pooled_size
from torch_runtime import TorchNet
from torch_runtime.layers import REGISTRY

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None)


# --------------------------------------------------------------------------- C3D-v1.1's formulas
def c3d_conv(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def c3d_deconv(n, k, s, p):
    return (n - 1) * s - 2 * p + k


def c3d_pool(n, k, s, p):
    out = math.ceil((n + 2 * p - k) / s) + 1
    if (out - 1) * s >= n + p:   # the last window must start inside the input + pad
        out -= 1
    return out


def test_output_size_functions_are_c3d_formulas():
    for n in range(1, 13):
        for k in range(1, 5):
            for s in range(1, 5):
                for p in range(k):
                    assert deconv_out(n, k, s, p) == c3d_deconv(n, k, s, p)
                    if n + 2 * p >= k:
                        assert conv_out(n, k, s, p) == c3d_conv(n, k, s, p)
                        assert pooled_size(n, k, s, p) == c3d_pool(n, k, s, p)
    assert pooled_size(5, 1, 3, 0) == 2 and pooled_size(5, 1, 3, 0, clip=False) == 3
    assert pooled_size(5, 2, 2, 0, ceil_mode=False) == 2


# --------------------------------------------------------------------------- three engines
def net_text(shape, layer: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
            f'layer {{ name: "l" bottom: "data" top: "y" {layer} }}\n')


@pytest.fixture(scope="module")
def net_file(tmp_path_factory):
    return tmp_path_factory.mktemp("layerspec") / "net.prototxt"


def three_ways(caffe, net_file, shape, layer: str) -> dict:
    """{engine: (top shape, parameter blob shapes)} for pycaffe, the spec and torch."""
    text = net_text(shape, layer)
    net_file.write_text(text)
    net = caffe.Net(str(net_file), caffe.TEST)
    lp = text_format.Parse(text, pb2().NetParameter()).layer[1]
    r = SPECS[lp.type].resolve(lp, shape)
    tl = REGISTRY[lp.type](lp, "TEST")
    tl.setup([shape])
    with torch.no_grad():
        y = tl(torch.zeros(shape))[0]
    return {"caffe": (net.blobs["y"].data.shape,
                      [b.data.shape for b in net.params["l"]] if "l" in net.params else []),
            "spec": (r.top, r.param_shapes),
            "torch": (tuple(y.shape), [tuple(b.shape) for b in tl.blobs])}


def assert_all(got: dict, top, params):
    for engine, (t, ps) in got.items():
        assert (tuple(t), [tuple(p) for p in ps]) == (top, params), engine


@st.composite
def window(draw, pool=False):
    """(kernel, stride, pad) of one axis; pooling needs pad < kernel."""
    k, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return k, s, draw(st.integers(0, min(2, k - 1) if pool else 2))


def sizes(k, s, p, deconv=False):
    """Input sizes with an output of at least 1."""
    lo = 1 + max(0, -(-(2 * p - k + 1) // s)) if deconv else max(1, k - 2 * p)
    return st.integers(lo, lo + 4)


@st.composite
def volume(draw, deconv=False, pool=False):
    """(L, H, W) and the (temporal, spatial) windows: C3D has one window for H and W."""
    t, hw = draw(window(pool)), draw(window(pool))
    return tuple(draw(sizes(*a, deconv)) for a in (t, hw, hw)), t, hw


def c3d_fields(t, hw) -> str:
    return (f"kernel_depth: {t[0]} kernel_size: {hw[0]} temporal_stride: {t[1]} stride: {hw[1]} "
            f"temporal_pad: {t[2]} pad: {hw[2]}")


@st.composite
def conv3d_case(draw, deconv):
    g = draw(st.sampled_from([1, 2]))
    n, c, o = draw(st.integers(1, 2)), g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    return n, c, o, g, draw(st.booleans()), draw(volume(deconv))


def check_conv3d(caffe, net_file, case, deconv):
    n, c, o, g, bias, (lhw, t, hw) = case
    ltype, rule = ("Deconvolution3D", c3d_deconv) if deconv else ("Convolution3D", c3d_conv)
    layer = (f'type: "{ltype}" convolution3d_param {{ num_output: {o} group: {g} '
             f"bias_term: {str(bias).lower()} {c3d_fields(t, hw)} }}")
    got = three_ways(caffe, net_file, (n, c) + lhw, layer)
    top = (n, o) + tuple(rule(x, *w) for x, w in zip(lhw, (t, hw, hw)))
    weight = (c, o // g) if deconv else (o, c // g)
    assert_all(got, top, [weight + (t[0], hw[0], hw[0])] + ([(1, 1, 1, 1, o)] if bias else []))


@PROPERTY
@given(case=conv3d_case(deconv=False))
def test_convolution3d_spec_caffe_and_torch_agree(caffe, net_file, case):
    check_conv3d(caffe, net_file, case, deconv=False)


@PROPERTY
@given(case=conv3d_case(deconv=True))
def test_deconvolution3d_spec_caffe_and_torch_agree(caffe, net_file, case):
    check_conv3d(caffe, net_file, case, deconv=True)


@settings(PROPERTY, max_examples=150)
@given(vol=volume(pool=True), c=st.integers(1, 3), method=st.sampled_from(["MAX", "AVE"]))
def test_pooling3d_spec_caffe_and_torch_agree(caffe, net_file, vol, c, method):
    lhw, t, hw = vol
    layer = f'type: "Pooling3D" pooling3d_param {{ pool: {method} {c3d_fields(t, hw)} }}'
    got = three_ways(caffe, net_file, (1, c) + lhw, layer)
    assert_all(got, (1, c) + tuple(c3d_pool(x, *w) for x, w in zip(lhw, (t, hw, hw))), [])


# Mainline layers: the 2D pooling's clip only with padding, ceil_mode, global pooling, the
# _h/_w fields, N-D kernels with dilation, InnerProduct's transpose.
MAINLINE = [
    ((1, 2, 5, 6), 'type: "Pooling" pooling_param { pool: MAX kernel_size: 1 stride: 3 }',
     (1, 2, 3, 3), []),                                     # no pad, no clip (Pooling3D: 2×2)
    ((1, 2, 5, 5), 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 3 pad: 1 }',
     (1, 2, 2, 2), []),                                                  # padded: clipped
    ((1, 2, 5, 7), 'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false }',
     (1, 2, 2, 3), []),
    ((2, 3, 5, 4), 'type: "Pooling" pooling_param { pool: AVE global_pooling: true }', (2, 3, 1, 1), []),
    ((1, 1, 7, 9), 'type: "Pooling" pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 '
                   'stride_w: 3 pad_h: 1 pad_w: 1 }', (1, 1, 4, 4), []),
    ((1, 4, 6, 7, 8), 'type: "Convolution" convolution_param { num_output: 6 group: 2 kernel_size: 3 '
                      'kernel_size: 1 kernel_size: 2 stride: 2 pad: 1 dilation: 2 }',
     (1, 6, 2, 5, 4), [(6, 2, 3, 1, 2), (6,)]),
    ((2, 3, 5, 6), 'type: "Deconvolution" convolution_param { num_output: 2 kernel_h: 3 kernel_w: 2 '
                   'stride: 2 bias_term: false }', (2, 2, 11, 12), [(3, 2, 3, 2)]),
    ((2, 3, 4, 5), 'type: "InnerProduct" inner_product_param { num_output: 7 transpose: true }',
     (2, 7), [(60, 7), (7,)]),
    ((2, 3, 4, 5), 'type: "InnerProduct" inner_product_param { num_output: 7 axis: 2 }',
     (2, 3, 7), [(7, 20), (7,)]),
]


@pytest.mark.parametrize("shape,layer,top,params", MAINLINE)
def test_mainline_specs_caffe_and_torch_agree(caffe, net_file, shape, layer, top, params):
    assert_all(three_ways(caffe, net_file, shape, layer), top, params)


def test_flops_count_a_multiply_add_as_two():
    def flops(shape, layer):
        lp = text_format.Parse(net_text(shape, layer), pb2().NetParameter()).layer[1]
        return SPECS[lp.type].resolve(lp, shape).flops
    conv = 'convolution3d_param { num_output: 4 kernel_depth: 3 kernel_size: 3 pad: 1 temporal_pad: 1 }'
    assert flops((1, 2, 4, 5, 5), f'type: "Convolution3D" {conv}') == 2 * (4 * 4 * 5 * 5) * 2 * 27
    assert flops((1, 2, 4, 5, 5), f'type: "Deconvolution3D" {conv}') == 2 * (2 * 4 * 5 * 5) * 4 * 27
    pool = 'type: "Pooling3D" pooling3d_param { kernel_depth: 2 kernel_size: 2 stride: 2 temporal_stride: 2 }'
    assert flops((1, 2, 4, 4, 4), pool) == (2 * 2 * 2 * 2) * 8


# --------------------------------------------------------------------------- errors
C3D = 'convolution3d_param { num_output: 4 kernel_depth: 3 kernel_size: 3 '
BAD = [
    ((1, 3, 4, 6, 6), f'type: "Convolution3D" {C3D.replace("kernel_size: 3", "kernel_size: 0")} }}',
     "convolution3d_param.kernel_size must be > 0"),
    ((1, 3, 6, 6), 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 kernel_size: 0 }',
     "kernel_size must be > 0 on every spatial axis"),
    ((1, 3, 4, 6, 6), f'type: "Convolution3D" {C3D} group: 3 }}', "num_output 4 is not divisible by group 3"),
    ((1, 3, 4, 6, 6), f'type: "Deconvolution3D" {C3D} group: 2 }}',
     "its 3 channels are not divisible by group 2"),
    ((1, 3, 4, 6, 6), f'type: "Convolution3D" {C3D} group: 0 }}', "convolution3d_param.group must be > 0"),
    ((1, 3, 4, 6, 6), 'type: "Pooling3D" pooling3d_param { kernel_depth: 2 kernel_size: 2 pad: 2 }',
     "pad must be smaller than the kernel"),
    ((1, 3, 6, 6), 'type: "Pooling" pooling_param { kernel_size: 2 pad: 2 }',
     "pad 2×2 must be smaller than the kernel 2×2"),
    ((1, 3, 4, 6, 6), 'type: "Pooling3D" pooling3d_param { pool: STOCHASTIC kernel_depth: 2 kernel_size: 2 }',
     "Pooling3D supports MAX and AVE only"),
    ((1, 3, 6, 6), 'type: "Pooling" pooling_param { kernel_size: 2 kernel_h: 2 kernel_w: 2 }',
     "give kernel_size, or kernel_h and kernel_w"),
    ((1, 3, 4, 6, 6), 'type: "Pooling" pooling_param { kernel_size: 2 }',
     "needs a 4D input, got 1×3×4×6×6 (5D) (Pooling is 2D in Caffe; use Pooling3D"),
    ((1, 3, 4, 6, 6), f'type: "Convolution3D" {C3D} pad: 0 temporal_pad: 0 stride: 1 }}'.replace(
        "kernel_depth: 3", "kernel_depth: 5"), "input 1×3×4×6×6 is too small for kernel 5×3×3"),
]


@pytest.mark.parametrize("shape,layer,message", BAD)
def test_bad_layers_get_the_same_clear_error_everywhere(shape, layer, message):
    text = net_text(shape, layer)
    net = text_format.Parse(text, pb2().NetParameter())
    lp = net.layer[1]
    with pytest.raises(LayerSpecError, match="^layer 'l' ") as spec_err:
        SPECS[lp.type].resolve(lp, shape)
    assert (spec_err.value.layer, spec_err.value.ltype) == ("l", lp.type)
    assert message in str(spec_err.value)
    with pytest.raises(validate.ValidationError) as val_err:
        validate.validate_net(net, "bad.prototxt")
    with pytest.raises(LayerSpecError) as torch_err:
        TorchNet(text)
    for e in (val_err, torch_err):
        assert str(spec_err.value) in str(e.value)


PAIR = ('layer {{ name: "p" type: "Input" top: "p" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}\n'
        'layer {{ name: "t" type: "Input" top: "t" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}\n'
        'layer {{ name: "loss" type: "Python" bottom: "p" bottom: "t" top: "loss" loss_weight: 1 '
        "python_param {{ module: 'models.pylayers' layer: '{cls}' param_str: '{param}' }} }}\n")


@pytest.mark.parametrize("cls,param,message", [
    ("HuberLoss", '{"variant": "papr"}', "HuberLoss: variant must be 'paper' or 'standard', got 'papr'"),
    ("ClippedEuclideanLoss", '{"scale": 2}', "ClippedEuclideanLoss: unknown param(s) ['scale']"),
])
def test_python_layer_params_rejected_alike_in_both_engines(make_net, cls, param, message):
    text = PAIR.format(cls=cls, param=param)
    with pytest.raises(Exception) as caffe_err:
        make_net(text)
    with pytest.raises(validate.ValidationError) as val_err:
        validate.validate_net(text_format.Parse(text, pb2().NetParameter()), "bad.prototxt")
    with pytest.raises(LayerSpecError) as torch_err:
        TorchNet(text)
    for e in (caffe_err, val_err, torch_err):
        assert message in str(e.value), e.value
    assert str(torch_err.value).startswith("layer 'loss' (Python): ")
