"""Export a deploy net + caffemodel to ONNX through the PyTorch runtime.

    python -m tools.export --net seg_v2v --weights runs/seg_v2v --onnx runs/export/seg_v2v.onnx
    python -m tools.export --net prototxt/flow_v2v_deploy.prototxt --weights W.caffemodel --onnx flow.onnx
    python -m tools.export --net flow_v2v --weights W.caffemodel --shape 8,32,32   # another clip size

``--net`` is a net of prototxt/ (seg_v2v, flow_v2v, color_v2v, ...: its deploy file
prototxt/<net>_deploy.prototxt) or a deploy prototxt's path; ``--prototxt`` names the
deploy file explicitly. ``--weights`` is a caffemodel or a run folder (its newest snapshot).
The net is built by the torch runtime (torch_runtime.TorchNet) from the prototxt, the
caffemodel is checked against the net and loaded, and torch.onnx.export (the dynamo /
torch.export exporter, through onnxscript) writes one self-contained .onnx file
(default runs/export/<net>.onnx):

- opset 18 (``--opset``); ONNX ops Conv, ConvTranspose, MaxPool (ceil_mode), Relu, Concat,
  Mul and Softmax for the V2V nets;
- one input, named as the deploy net's input blob (``data``): float32 (N, C, L, H, W),
  prepared exactly as for the deploy net (e.g. mean-subtracted); the batch N is dynamic
  (symbol ``batch``), C, L, H, W are fixed to the prototxt's Input shape or ``--shape``;
- the deploy net's outputs, named as its blobs (``prob``, ``flow``, ``conv_pre``), (N, K, L, H, W).

After writing, the file is checked (onnx.checker, full check) and ``--check-clips`` random
clips (default 2, as one batch, so the dynamic batch is exercised; 0: the checker only) go
through onnxruntime (CPU) and through the torch runtime; the maximum relative difference,
max|onnx - torch| / max|torch| per output, is printed, and above ``--tol`` (1e-4) the exit
status is 1. Bad input (a missing file, weights that do not fit the net, a bad --shape) is
a one-line error and exit status 2.

From Python (e.g. the demo):

    from tools.export import export_onnx, run_onnx
    path = export_onnx("prototxt/flow_v2v_deploy.prototxt", "flow.caffemodel", "runs/export/flow.onnx")
    flow = run_onnx(path, clip)["flow"]   # clip (C,L,H,W) -> (K,L,H,W); (N,C,L,H,W) -> (N,K,L,H,W)
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from models import cli, validate
from models.paths import PROTOTXT, RUNS, resolve_weights, user_path
from tools.evaluate import net_files

OPSET = 18      # default ONNX opset (onnxruntime >= 1.14, TensorRT 10; TensorRT 8.6 wants 17)
TOL = 1e-4      # max |onnx - torch| / max |torch| accepted after an export
BATCH = "batch"  # the name of the dynamic batch dimension in the ONNX graph


class ExportError(ValueError):
    pass


PINS = "torch==2.13.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 (requirements-torch.txt)"


def require_packages() -> None:
    """torch (the runtime), onnx + onnxscript (the exporter), onnxruntime (the check)."""
    from torch_runtime import require_torch
    require_torch()
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError as e:
            raise ImportError(f"export needs {mod}: .venv/bin/pip install {PINS} ({e})") from None


# --------------------------------------------------------------------------- inputs
def deploy_file(net: str | None = None, prototxt=None) -> Path:
    """The deploy prototxt: ``prototxt`` if given, else ``net`` as a path (it ends in
    .prototxt or names a folder) or as a net of prototxt/ (tools.evaluate.net_files)."""
    if prototxt:
        return user_path(prototxt)
    if not net:
        raise ExportError("give --net (a net name or a deploy prototxt) or --prototxt")
    if net.endswith(".prototxt") or len(Path(net).parts) > 1:
        return user_path(net)
    deploy, _ = net_files(net)
    if not deploy.exists():
        names = sorted(p.name[:-len("_deploy.prototxt")] for p in PROTOTXT.glob("*_deploy.prototxt"))
        raise ExportError(f"{deploy}: no deploy net named '{net}' (nets in {PROTOTXT}: {', '.join(names)})")
    return deploy


def input_blob(npm, path) -> tuple[str, tuple[int, ...]]:
    """(name, shape) of a deploy net's one input (an Input layer or net-level ``input``)."""
    tops = [(t, lp) for lp in npm.layer if lp.type == "Input" for t in lp.top]
    if len(tops) == 1:
        t, lp = tops[0]
        if len(lp.input_param.shape):
            return t, tuple(int(d) for d in lp.input_param.shape[0].dim)
    elif not tops and len(npm.input) == 1:
        if len(npm.input_shape):
            return npm.input[0], tuple(int(d) for d in npm.input_shape[0].dim)
        if len(npm.input_dim) >= 4:
            return npm.input[0], tuple(int(d) for d in npm.input_dim)
    found = [t for t, _ in tops] or list(npm.input)
    if len(found) > 1:
        raise ExportError(f"{path}: the net has {len(found)} inputs ({', '.join(found)}); "
                          "export takes a deploy net with one input")
    raise ExportError(f"{path}: no Input layer with a shape: export takes a deploy net")


def clip_shape(net_shape: tuple, shape=None, where: str = "--shape") -> tuple[int, ...]:
    """The (1, C, L, H, W) the graph is exported at: the net's own, or ``shape`` given as
    (L, H, W), (C, L, H, W) or (N, C, L, H, W) (N is ignored: the batch is dynamic; C must
    be the net's), e.g. ``clip.shape``."""
    if shape is None:
        return (1,) + tuple(net_shape[1:])
    dims = tuple(int(d) for d in shape)
    if len(dims) in (4, 5):
        if dims[-4] != net_shape[1]:
            raise ExportError(f"{where}: {dims[-4]} channels, the net takes {net_shape[1]}")
        dims = dims[-3:]
    if len(dims) != 3 or len(net_shape) != 5:
        raise ExportError(f"{where}: give L,H,W (or N,C,L,H,W) for a net with input "
                          f"{'×'.join(map(str, net_shape))}")
    validate.check_input_size(*dims, where=where)
    return (1, net_shape[1]) + dims


# --------------------------------------------------------------------------- export
def build_net(deploy, weights, shape=None):
    """The checked TorchNet of ``deploy`` with ``weights`` loaded, its input at (1, C, L, H, W)
    (``shape``: see clip_shape); eval mode, parameters frozen."""
    deploy = Path(deploy)
    npm = validate.validate_net_file(deploy, "TEST")
    weights = resolve_weights(weights)
    validate.validate_weights(weights, npm, deploy, missing_ok=set())
    name, net_shape = input_blob(npm, deploy)
    x_shape = clip_shape(net_shape, shape)
    require_packages()
    from torch_runtime import TorchNet, load_caffemodel
    net = TorchNet(npm, "TEST", input_shapes={name: x_shape})
    load_caffemodel(net, weights, strict=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.source = (deploy, weights)
    return net


def _graph_module(net):
    """The net as a module of one tensor returning its outputs in order (what ONNX exports)."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net({net.input_names[0]: x})
            return tuple(out[k] for k in net.output_names)

    return Graph().eval()


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress prints and internal deprecation warnings off."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        log.setLevel(level)


def export_net(net, out_path, opset: int = OPSET) -> Path:
    """Write a built TorchNet (build_net) as ONNX at ``out_path``: dynamic batch, fixed clip size."""
    import torch
    out = cli.output_file(out_path)   # a rename onto a folder or a device (/dev/full) would replace it
    out.parent.mkdir(parents=True, exist_ok=True)
    name = net.input_names[0]
    x = torch.zeros(net.blob_shapes[name])
    tmp = out.with_name(out.name + ".tmp")
    try:
        with _quiet_exporter():
            prog = torch.onnx.export(
                _graph_module(net), (x,), None, dynamo=True, verbose=False, opset_version=opset,
                input_names=[name], output_names=list(net.output_names),
                dynamic_shapes=({0: torch.export.Dim(BATCH)},), optimize=True)
    except Exception as e:  # noqa: BLE001 - any exporter failure becomes one line naming the net
        first = (str(e).strip().splitlines() or [""])[0]
        src = getattr(net, "source", (net.name,))[0]
        raise ExportError(f"{src}: torch.onnx.export (opset {opset}) failed: {type(e).__name__}: {first}") from None
    deploy, weights = getattr(net, "source", (None, None))
    prog.model.doc_string = f"V2V deploy net '{net.name}' exported by tools.export (v2v-caffe)"
    prog.model.metadata_props.update({
        "net": net.name, "prototxt": str(deploy), "caffemodel": str(weights),
        "dynamic_axes": f"{BATCH} (axis 0 of every input and output)"})
    prog.save(tmp, external_data=False)
    tmp.replace(out)
    return out


def export_onnx(deploy_prototxt, weights, out_path, opset: int = OPSET, shape=None) -> Path:
    """Export ``deploy_prototxt`` + ``weights`` (a caffemodel or a run folder) to ONNX at
    ``out_path``, through the torch runtime; returns the path.

    opset: ONNX opset (default 18). shape: clip size (L, H, W) of the graph (or a clip's
    (C, L, H, W) / (N, C, L, H, W)), default the prototxt's Input shape; the batch axis is
    always dynamic ("batch"). Needs torch, onnx and onnxscript (ImportError naming the pins).
    Raises ValidationError / ExportError (ValueErrors, messages starting with the file) for
    bad input. No check is run here: see check_export.
    """
    return export_net(build_net(deploy_prototxt, weights, shape), out_path, opset)


# --------------------------------------------------------------------------- onnxruntime
def onnx_session(onnx_path, providers=("CPUExecutionProvider",)):
    """An onnxruntime InferenceSession (CPU by default; e.g. ("CUDAExecutionProvider",
    "CPUExecutionProvider") with onnxruntime-gpu)."""
    import onnxruntime as ort
    path = Path(onnx_path)
    if not path.is_file():
        raise ExportError(f"{path}: ONNX file not found")
    return ort.InferenceSession(str(path), providers=list(providers))


def run_onnx(onnx_path, clip: np.ndarray, providers=("CPUExecutionProvider",)) -> dict[str, np.ndarray]:
    """Run clips through an exported net with onnxruntime: {output name: array}.

    ``clip``: one prepared clip (C, L, H, W) -> outputs (K, L, H, W), or a batch
    (N, C, L, H, W) -> (N, K, L, H, W); float32, prepared as for the deploy net.
    ``onnx_path`` may also be a session from onnx_session (to run many clips).
    """
    sess = onnx_path if hasattr(onnx_path, "run") else onnx_session(onnx_path, providers)
    inp = sess.get_inputs()[0]
    x = np.asarray(clip, dtype=np.float32)
    single = x.ndim == len(inp.shape) - 1
    if single:
        x = x[None]
    fixed = [d if isinstance(d, int) else None for d in inp.shape]
    if x.ndim != len(fixed) or any(f is not None and f != s for f, s in zip(fixed[1:], x.shape[1:])):
        want = "×".join(str(d) for d in inp.shape)
        raise ExportError(f"{getattr(onnx_path, '_model_path', onnx_path)}: input '{inp.name}' is {want}, "
                          f"got an array of shape {tuple(np.shape(clip))}")
    outs = sess.run(None, {inp.name: np.ascontiguousarray(x)})
    return {o.name: (v[0] if single else v) for o, v in zip(sess.get_outputs(), outs)}


def rel_diff(got, ref) -> float:
    """max |got - ref| / max |ref| (max |got| when ref is all zeros)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    den = np.abs(ref).max()
    return float(np.abs(got - ref).max() / den) if den > 0 else float(np.abs(got).max())


def check_export(onnx_path, net, clips: int = 2, seed: int = 0) -> dict[str, float]:
    """onnx.checker (full) on the file, then ``clips`` random clips as one batch through
    onnxruntime (CPU) and the torch runtime ``net``: max relative difference per output."""
    import onnx
    import torch
    onnx.checker.check_model(str(onnx_path), full_check=True)
    if clips <= 0:
        return {}
    shape = net.blob_shapes[net.input_names[0]]
    x = np.random.default_rng(seed).standard_normal((clips,) + tuple(shape[1:])).astype(np.float32)
    got = run_onnx(onnx_path, x)
    with torch.no_grad():
        ref = net({net.input_names[0]: torch.from_numpy(x)})
    if set(got) != set(ref):
        raise ExportError(f"{onnx_path}: outputs {sorted(got)}, the net has {sorted(ref)}")
    return {k: rel_diff(got[k], ref[k].numpy()) for k in ref}


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", help="net name in prototxt/ (seg_v2v, flow_v2v, color_v2v, ...) or a deploy prototxt")
    ap.add_argument("--prototxt", "--deploy", dest="prototxt", help="deploy prototxt (instead of --net)")
    ap.add_argument("--weights", required=True,
                    help="caffemodel, or a run folder (runs/<net>: its newest snapshot)")
    ap.add_argument("--onnx", type=Path, help="output .onnx (default runs/export/<net>.onnx)")
    ap.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    ap.add_argument("--shape", help="clip size L,H,W (or N,C,L,H,W) of the graph (default: the "
                                    "prototxt's Input shape); the batch is dynamic either way")
    ap.add_argument("--check-clips", type=int, default=2, metavar="N",
                    help="random clips (one batch) compared after the export (default 2; 0: onnx.checker only)")
    ap.add_argument("--tol", type=float, default=TOL,
                    help=f"max relative difference onnxruntime vs torch accepted (default {TOL:g})")
    return ap


def _dims(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise ExportError(f"--shape {text}: give integers L,H,W (or N,C,L,H,W)") from None


def _describe(onnx_path) -> str:
    import onnx
    m = onnx.load(str(onnx_path), load_external_data=False)

    def shp(v):
        return "[" + ", ".join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim) + "]"
    ins = ", ".join(f"{v.name} float32 {shp(v)}" for v in m.graph.input)
    outs = ", ".join(f"{v.name} {shp(v)}" for v in m.graph.output)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    return f"opset {opset}, input {ins}, outputs {outs}"


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    try:
        deploy = deploy_file(a.net, a.prototxt)
        shape = _dims(a.shape) if a.shape else None
        net = build_net(deploy, a.weights, shape)
        out = a.onnx or RUNS / "export" / f"{deploy.stem.removesuffix('_deploy')}.onnx"
        with cli.writing(out):
            export_net(net, out, a.opset)
    except (ValueError, OSError, ImportError) as e:  # ValidationError, ExportError, TorchMissing
        print(f"error: {e}", file=sys.stderr)
        return 2
    mb = out.stat().st_size / 1e6
    print(f"[export] {deploy} + {net.source[1]} -> {out} ({mb:.1f} MB)")
    print(f"[export] {_describe(out)}; batch dynamic ('{BATCH}')")
    import onnx
    import onnxruntime as ort
    try:
        errs = check_export(out, net, a.check_clips)
    except (onnx.checker.ValidationError, ExportError) as e:   # a broken export: not the user's input
        print(f"error: {out}: the exported file fails its check: {e}", file=sys.stderr)
        return 1
    if not errs:
        print("[export] onnx.checker ok (no clips compared: --check-clips 0)")
        return 0
    worst = max(errs.values())
    print(f"[export] onnx.checker ok; {a.check_clips} random clip(s) as one batch, onnxruntime {ort.__version__} "
          "(CPU) vs the torch runtime: max relative difference "
          + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    if worst > a.tol:
        print(f"error: {out}: onnxruntime differs from the torch runtime by {worst:.2e} (> --tol {a.tol:g})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
