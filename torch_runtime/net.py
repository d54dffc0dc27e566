"""Build a torch module from a Caffe prototxt, with Caffe's net semantics.

``TorchNet(prototxt, phase="TEST", input_shapes=None, stages=(), level=0)``:
- layers filtered by include/exclude rules (phase, stages, level) as Caffe's
  StateMeetsRule; in-place tops and Caffe's implicit Split work by blob name;
- parameter blobs with Caffe's shapes, in Caffe order (``net.params[layer][i]``);
- ``param { lr_mult decay_mult name }``: lr_mult 0 freezes the blob (requires_grad False,
  as Caffe's param_propagate_down), shared names share one tensor;
- loss weights as Caffe: ``loss_weight`` per top, default 1 on the first top of *Loss
  layers (not Python layers); ``out.loss`` = Σ weight · sum(top);
- outputs = tops no later layer consumes (Caffe's net outputs).
Source layers (Input, Python data layers, net-level ``input``) are fed by the caller:
``net({"data": x, "label": y})`` or ``net(x)`` for one input.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
from google.protobuf import text_format

from .layers import REGISTRY, CaffeLayer, LayerError
from . import pylayers_torch  # noqa: F401  (registers "Python")


class UnsupportedLayer(ValueError):
    pass


def _pb2():
    from models.engine import pb2
    return pb2()


def read_net_param(src):
    """A NetParameter from a path, prototxt text or NetParameter."""
    pb = _pb2()
    if isinstance(src, pb.NetParameter):
        return src
    if isinstance(src, str) and "\n" not in src and src.strip().endswith(".prototxt"):
        src = Path(src)
    if isinstance(src, Path) and not src.exists():
        raise FileNotFoundError(f"prototxt {src} not found")
    text = Path(src).read_text() if isinstance(src, Path) or (
        isinstance(src, str) and "\n" not in src and Path(src).exists()) else str(src)
    np_ = pb.NetParameter()
    text_format.Merge(text, np_)
    if len(np_.layers):
        raise UnsupportedLayer("this prototxt uses the V1 `layers {}` syntax (C3D-v1.0); "
                               "upgrade it to `layer {}` (Caffe's upgrade_net_proto_text)")
    return np_


def state_meets_rule(rule, phase: str, stages, level: int) -> bool:
    if rule.HasField("phase") and rule.phase != (0 if phase == "TRAIN" else 1):
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(lp, phase, stages=(), level=0) -> bool:
    if lp.include:
        return any(state_meets_rule(r, phase, stages, level) for r in lp.include)
    return not any(state_meets_rule(r, phase, stages, level) for r in lp.exclude)


class NetOutput(OrderedDict):
    """Output blobs by name; ``.loss`` is the weighted total loss (or None)."""
    loss = None


def _key(name, used):
    k = name.replace(".", "_") or "layer"
    base, i = k, 1
    while k in used:
        i += 1
        k = f"{base}_{i}"
    used.add(k)
    return k


def _net_inputs(npm, input_shapes: dict) -> dict:
    """Shapes of the net-level inputs (the deprecated ``input:`` syntax), by name."""
    shapes = {}
    for i, name in enumerate(npm.input):
        if name in input_shapes:
            shapes[name] = input_shapes[name]
        elif len(npm.input_shape) > i:
            shapes[name] = tuple(npm.input_shape[i].dim)
        elif len(npm.input_dim) >= 4 * (i + 1):
            shapes[name] = tuple(npm.input_dim[4 * i:4 * i + 4])
        else:
            raise ValueError(f"net input {name!r} has no shape")
    return shapes


def _make_layer(lp, phase: str, native_python: bool) -> CaffeLayer:
    cls = REGISTRY.get(lp.type)
    if cls is None:
        raise UnsupportedLayer(
            f"layer '{lp.name}' has type '{lp.type}', which the torch runtime does not "
            f"support (supported: {', '.join(sorted(REGISTRY))})")
    try:
        return cls(lp, phase, native_python) if lp.type == "Python" else cls(lp, phase)
    except (ValueError, TypeError) as e:
        raise LayerError(lp, str(e)) from e


def _source_shapes(layer, lp, input_shapes: dict) -> list:
    """Top shapes of a source layer: given by the caller, else known to the layer."""
    tshapes = [input_shapes.get(t) for t in lp.top]
    if all(s is not None for s in tshapes):
        return tshapes
    known = layer.shapes()
    if known is None:
        missing = [t for t, s in zip(lp.top, tshapes) if s is None]
        cause = getattr(layer, "shape_error", None)
        raise ValueError(
            f"layer '{lp.name}' ({lp.type}) cannot tell the shapes of its tops "
            f"{missing}" + (f": {cause}" if cause else "") +
            " (from Python, TorchNet(..., input_shapes={top: shape}) gives them)")
    return [s if s is not None else tuple(k) for s, k in zip(tshapes, known)]


def _set_up(layer, lp, bshapes) -> list:
    """Set a layer up on its bottom shapes; its top shapes."""
    try:
        layer.setup(bshapes)
        return layer.top_shapes(bshapes)
    except LayerError:
        raise
    except Exception as e:
        raise LayerError(lp, f"set-up with bottoms {bshapes} failed: {e}") from e


def _loss_weights(layer, lp) -> list:
    """Caffe's: loss_weight per top, default 1 on a loss layer's first top."""
    lw = list(lp.loss_weight)
    if not lw and layer.is_loss:
        lw = [1.0] + [0.0] * (len(lp.top) - 1)
    return lw + [0.0] * (len(lp.top) - len(lw))


class TorchNet(nn.Module):
    def __init__(self, src, phase: str = "TEST", input_shapes: dict | None = None,
                 stages=(), level: int = 0, native_python: bool = True):
        super().__init__()
        phase = phase.upper()
        if phase not in ("TRAIN", "TEST"):
            raise ValueError(f"phase must be TRAIN or TEST, got {phase}")
        self.net_param = read_net_param(src)
        self.phase = phase
        self.name = self.net_param.name
        input_shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
        self.layers = nn.ModuleDict()
        self.plan = []            # (key, bottoms, tops, loss_weights)
        self.param_specs = []     # (param, lr_mult, decay_mult, layer, index)
        shapes = _net_inputs(self.net_param, input_shapes)
        self.input_names = list(shapes)
        shared: dict[str, nn.Parameter] = {}
        used: set = set()
        for lp in self.net_param.layer:
            if layer_included(lp, phase, stages, level):
                self._add_layer(_make_layer(lp, phase, native_python), lp, shapes, input_shapes, shared, used)
        self.blob_shapes = shapes
        unknown = set(input_shapes) - set(self.input_names)
        if unknown:
            raise ValueError(f"input_shapes names {sorted(unknown)}, which are not inputs of this "
                             f"net (its inputs: {self.input_names})")
        self.output_names = self._outputs()

    def _add_layer(self, layer, lp, shapes: dict, input_shapes: dict, shared: dict, used: set) -> None:
        for b in lp.bottom:
            if b not in shapes:
                raise LayerError(lp, f"unknown bottom blob {b!r}")
        if layer.is_data:
            tshapes = _source_shapes(layer, lp, input_shapes)
            self.input_names += [t for t in lp.top if t not in self.input_names]
        else:
            tshapes = _set_up(layer, lp, [shapes[b] for b in lp.bottom])
        if len(tshapes) != len(lp.top):
            raise LayerError(lp, f"{len(lp.top)} tops in the prototxt, the layer makes {len(tshapes)}")
        for t, s in zip(lp.top, tshapes):
            shapes[t] = tuple(s)
        self._add_params(layer, lp, shared)
        key = _key(lp.name, used)
        self.layers[key] = layer
        self.plan.append((key, list(lp.bottom), list(lp.top), _loss_weights(layer, lp)))

    def _add_params(self, layer, lp, shared: dict) -> None:
        """param { lr_mult decay_mult name }: lr_mult 0 freezes, a shared name shares the tensor."""
        for i, blob in enumerate(layer.blobs):
            spec = lp.param[i] if i < len(lp.param) else None
            lr = spec.lr_mult if spec is not None else 1.0
            dm = spec.decay_mult if spec is not None else 1.0
            pname = spec.name if spec is not None else ""
            if pname and pname in shared:
                if shared[pname].numel() != blob.numel():
                    raise LayerError(lp, f"shared param {pname!r} has another size")
                layer.blobs[i] = shared[pname]
                continue
            if pname:
                shared[pname] = blob
            blob.requires_grad_(lr != 0)
            self.param_specs.append((blob, float(lr), float(dm), lp.name, i))

    def _outputs(self) -> list:
        """Caffe's net outputs: blobs made available and not consumed by a later layer."""
        avail = list(self.input_names)
        for key, bottoms, tops, _ in self.plan:
            if not self.layers[key].is_data:
                avail = [a for a in avail if a not in bottoms]
            avail += [t for t in tops if t not in avail]
        return avail

    # ------------------------------------------------------------------ access
    @property
    def params(self) -> "OrderedDict[str, list[nn.Parameter]]":
        """Caffe-style ``net.params``: layer name -> list of blobs (layers with blobs)."""
        out = OrderedDict()
        for key, *_ in self.plan:
            layer = self.layers[key]
            if len(layer.blobs):
                out[layer.lname] = list(layer.blobs)
        return out

    def layer(self, name: str) -> CaffeLayer:
        for key, *_ in self.plan:
            if self.layers[key].lname == name:
                return self.layers[key]
        raise KeyError(name)

    @property
    def data_layers(self):
        return [self.layers[k] for k, *_ in self.plan if self.layers[k].is_data]

    # ------------------------------------------------------------------ forward
    def forward(self, inputs=None, return_blobs: bool = False, **kw) -> NetOutput:
        if inputs is None:
            inputs = {}
        elif torch.is_tensor(inputs):
            if len(self.input_names) != 1:
                raise ValueError(f"this net has inputs {self.input_names}: pass a dict")
            inputs = {self.input_names[0]: inputs}
        inputs = dict(inputs, **kw)
        blobs = {}
        for name in self.input_names:
            if name not in inputs:
                raise ValueError(f"missing input blob {name!r} (inputs: {self.input_names})")
            blobs[name] = inputs[name]
        loss = None
        for key, bottoms, tops, lw in self.plan:
            layer = self.layers[key]
            if layer.is_data:
                continue
            outs = layer(*[blobs[b] for b in bottoms])
            for t, v, w in zip(tops, outs, lw):
                blobs[t] = v
                if w:
                    term = v.float().sum() * w
                    loss = term if loss is None else loss + term
        out = NetOutput((n, blobs[n]) for n in (blobs if return_blobs else self.output_names))
        out.loss = loss
        return out
