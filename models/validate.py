"""The validator: every program checks nets, solvers and weights here before Caffe sees
them, so bad input gets a clear error naming the file and the problem instead of a glog
abort.

    validate_net_file(path, phase="TEST", input_shapes=None) -> NetParameter
    validate_solver_file(path) -> SolverParameter
    validate_weights(weights_path, net_param, net_path, missing_ok=None)
    check_caffe_command(argv)            (the caffe wrapper, via models/caffe_cli.py)
    python -m models.validate NET_OR_SOLVER.prototxt ...                 (a plain check)

Errors are ``ValidationError`` (a ValueError) whose message starts with the file.
"""
from __future__ import annotations

import difflib
import errno
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from models import cli, shapes
from models.schedule import POLICIES
from models import gpu
from models.engine import check_gpu_ids, layer_types, pb2
from models.layerspec import SPECS, LayerSpecError

SOLVER_TYPES = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}


class ValidationError(ValueError):
    pass


def _err(path, msg) -> ValidationError:
    return ValidationError(f"{path}: {msg}")


def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        hint = ""
        from models.paths import REPO
        if not path.is_absolute() and (REPO / path).exists() and Path.cwd() != REPO:
            hint = (f" (it exists under the repo root {REPO}: Caffe resolves paths from the "
                    f"current directory, so run caffe from the repo root)")
        raise _err(path, f"{what} file not found{hint}")
    if path.is_dir():
        raise _err(path, f"is a directory, expected a {what} file")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise _err(path, f"is not a text {what} file (binary?)") from None


def parse_text(path, message, what: str):
    path = Path(path)
    text = _read_text(path, what)
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        hint = ""
        if "layers" in str(e) or "Convolution3DParameter" in str(e):
            hint = " (C3D-v1.0 `layers { type: ENUM }` syntax is not supported: use layer {})"
        raise _err(path, f"not a valid {what}: {e}{hint}") from None
    return message


# --------------------------------------------------------------------------- nets
def load_net(path):
    return parse_text(path, pb2().NetParameter(), "net prototxt")


def check_structure(net, path) -> None:
    """Layer types, names, parameter messages: what is wrong before any shape. The rules
    of the types with parameters are their specs' (models.layerspec)."""
    if len(net.layers):
        raise _err(path, "uses the old `layers {}` (V1) syntax; write `layer {}` "
                         "(C3D-v1.1 dialect)")
    if not len(net.layer):
        raise _err(path, "has no layers")
    known = layer_types()
    for layer in net.layer:
        where = f"layer '{layer.name}'"
        if not layer.name:
            raise _err(path, f"a layer of type {layer.type} has no name")
        if not layer.type:
            raise _err(path, f"{where} has no type")
        if layer.type not in known:
            close = difflib.get_close_matches(layer.type, sorted(known), n=3)
            raise _err(path, f"{where}: unknown layer type '{layer.type}'"
                             + (f" (did you mean {', '.join(close)}?)" if close else ""))
        if layer.type in SPECS:
            try:
                SPECS[layer.type].check(layer)
            except LayerSpecError as e:
                raise _err(path, str(e)) from None
        if layer.type == "Python":
            if not layer.python_param.module or not layer.python_param.layer:
                raise _err(path, f"{where}: python_param needs module and layer")
        if layer.type == "HDF5Data":
            src = Path(layer.hdf5_data_param.source)
            if not src.exists():
                raise _err(path, f"{where}: HDF5Data source list {src} not found")


def validate_net(net, path, phase="TEST", input_shapes=None):
    """Structure and shapes of a parsed net; returns the shape inference."""
    check_structure(net, path)
    try:
        return shapes.infer_net(net, phase, input_shapes)
    except shapes.ShapeError as e:
        raise _err(path, f"{e} [phase {shapes.phase_name(phase)}]") from None


def validate_net_file(path, phase="TEST", input_shapes=None):
    net = load_net(path)
    validate_net(net, path, phase, input_shapes)
    return net


def check_input_size(length: int, height: int, width: int, where: str = "input") -> None:
    """V2V needs L divisible by 8 and H, W divisible by 16 (three 2× poolings in time,
    four in space, undone by the deconvolutions)."""
    if length % 8 or height % 16 or width % 16 or min(length, height, width) <= 0:
        raise ValidationError(f"{where}: clip size {length}×{height}×{width} (L×H×W) is not "
                              "valid for V2V: L must be a multiple of 8 and H, W multiples of 16")


# --------------------------------------------------------------------------- solvers
def load_solver(path):
    return parse_text(path, pb2().SolverParameter(), "solver prototxt")


def solver_nets(solver) -> list[tuple[str, str]]:
    """(path, phase) of every net file a solver names."""
    out = []
    if solver.net:
        out.append((solver.net, "TRAIN"))
        if len(solver.test_iter):  # Caffe builds a test net from `net` only then
            out.append((solver.net, "TEST"))
    if solver.train_net:
        out.append((solver.train_net, "TRAIN"))
    out += [(t, "TEST") for t in solver.test_net]
    return out


def check_solver_fields(s, path) -> None:
    """The solver fields Caffe CHECKs (or silently misreads) at its start."""
    if s.type and s.type not in SOLVER_TYPES:
        raise _err(path, f"unknown solver type '{s.type}'")
    if s.HasField("type") and s.HasField("solver_type"):
        raise _err(path, "sets both `type` and the old `solver_type`; keep `type`")
    if s.regularization_type not in ("L1", "L2"):
        raise _err(path, f"unknown regularization_type '{s.regularization_type}' (L1 or L2)")
    for fd, value in s.ListFields():   # NaN / inf (base_lr, weight_decay, momentum, ...) train NaN weights
        if fd.cpp_type in (fd.CPPTYPE_FLOAT, fd.CPPTYPE_DOUBLE) and not math.isfinite(value):
            raise _err(path, f"{fd.name} is {value}: it must be a finite number")
    if s.base_lr < 0:
        raise _err(path, "base_lr must be >= 0")
    for name in ("max_iter", "iter_size", "average_loss"):
        if getattr(s, name) <= 0:
            raise _err(path, f"{name} must be > 0 (it is {getattr(s, name)})")
    for name in ("display", "snapshot", "test_interval"):
        if getattr(s, name) < 0:
            raise _err(path, f"{name} must be >= 0 (it is {getattr(s, name)})")
    if s.snapshot and not s.snapshot_prefix:
        raise _err(path, "sets `snapshot` but no `snapshot_prefix`: Caffe would not know where to write")
    if len(s.test_iter) and s.HasField("test_interval") and s.test_interval == 0:
        raise _err(path, "sets test_iter with test_interval: 0; give test_interval > 0 or drop test_iter")
    if len(s.test_net) > len(s.test_iter):
        # Caffe CHECKs that test_iter is given for each test_net file.
        raise _err(path, "each test_net needs a test_iter")


def validate_solver_file(path, check_nets: bool = True):
    path = Path(path)
    s = load_solver(path)
    nets = solver_nets(s)
    if not nets:
        if s.HasField("net_param") or s.HasField("train_net_param"):
            raise _err(path, "inline net_param is not supported here; name a net file")
        raise _err(path, "names no net (set `net:` or `train_net:`)")
    if s.lr_policy not in POLICIES:  # Caffe aborts on an empty one too
        raise _err(path, f"unknown lr_policy '{s.lr_policy}' (one of {', '.join(POLICIES)})")
    if s.lr_policy == "step" and s.stepsize <= 0:
        raise _err(path, "lr_policy step needs stepsize > 0")
    if s.lr_policy == "multistep" and not len(s.stepvalue):
        raise _err(path, "lr_policy multistep needs stepvalue")
    check_solver_fields(s, path)
    if check_nets:
        for net_path, phase in nets:
            try:
                validate_net_file(net_path, phase)
            except ValidationError as e:
                raise ValidationError(f"{e}\n  (named by solver {path})") from None
    return s


def ensure_snapshot_dir(solver, train_net=None) -> None:
    """Caffe aborts when the snapshot_prefix folder is missing; make it (relative to the
    current directory, as Caffe reads it), and check it has room for a snapshot of
    ``train_net`` (a path) when given."""
    if solver.snapshot_prefix:
        folder = Path(solver.snapshot_prefix).parent
        folder.mkdir(parents=True, exist_ok=True)
        if train_net:
            infos = validate_net(load_net(train_net), train_net, "TRAIN")
            check_snapshot_room(folder, sum(i.params or 0 for i in infos))


def check_snapshot_room(folder: Path, n_params: int) -> None:
    """Caffe aborts (a glog CHECK) when it cannot write a snapshot: an OSError naming the
    folder instead, when it is not writable or has less room than one snapshot takes (the
    weights and up to two history values per weight, 4 bytes each)."""
    need = 12 * n_params
    if not os.access(folder, os.W_OK):
        raise OSError(errno.EACCES, "not writable: Caffe cannot write its snapshots here", str(folder))
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OSError(errno.ENOSPC, f"No space left on device for a snapshot ({need >> 20} MiB "
                                    f"needed, {free >> 20} MiB free)", str(folder))


# --------------------------------------------------------------------------- weights
def read_weights(weights):
    """A caffemodel parsed, or a clear error (missing, text, damaged, old format, empty)."""
    weights = Path(weights)
    if not weights.exists():
        raise _err(weights, "weights file not found")
    if weights.suffix in (".prototxt", ".txt"):
        raise _err(weights, "is a text file; -weights takes a binary .caffemodel")
    model = pb2().NetParameter()
    try:
        model.ParseFromString(weights.read_bytes())
    except (DecodeError, ValueError) as e:
        raise _err(weights, f"is not a Caffe model (protobuf parse failed: {e})") from None
    if len(model.layers) and not len(model.layer):
        raise _err(weights, "is an old-format (V1 / C3D-v1.0) caffemodel; convert it first: "
                            "python -m tools.convert_c3d " + str(weights))
    if not len(model.layer):
        raise _err(weights, "holds no layers: not a Caffe model")
    return model


def _blob_shape(bp) -> tuple:
    return tuple(bp.shape.dim) if bp.HasField("shape") else \
        tuple(d for d in (bp.num, bp.channels, bp.height, bp.width))


def check_blob(weights, name: str, j: int, bp, want, net_path) -> None:
    """One stored blob against the net's: shape, value count (Caffe aborts on a mismatch)
    and finite values (NaN or inf weights give NaN outputs that look like results)."""
    got = _blob_shape(bp)
    where = f"layer '{name}' blob {j}"
    if want is not None:
        legacy_ok = (not bp.HasField("shape") and len(want) <= 4 and None not in want
                     and shapes.math.prod(got) == shapes.math.prod(want))
        if not legacy_ok and (len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want))):
            raise _err(weights, f"{where} is {shapes.fmt(got)} but {net_path} expects {shapes.fmt(want)}")
    values = bp.double_data if len(bp.double_data) else bp.data
    if len(values) != shapes.math.prod(got):
        raise _err(weights, f"{where} holds {len(values)} values but its shape {shapes.fmt(got)} needs "
                            f"{shapes.math.prod(got)}: the file is damaged")
    bad = int(np.count_nonzero(~np.isfinite(np.asarray(values, dtype=np.float64))))
    if bad:
        raise _err(weights, f"{where} has {bad} NaN/inf values (of {len(values)}): these weights are unusable "
                            "(a diverged training run?)")


def validate_weights(weights, net, net_path, missing_ok=None):
    """A caffemodel must parse and its blobs must fit the layers they copy into by name, with
    as many values as their shapes and all finite. ``missing_ok``: None, any layer of the net
    may be missing from the weights (training from C3D: new layers start from their fillers);
    else the names of the layers that may be missing, and any other missing layer with
    parameters is an error (evaluate, predict: it would run with random fillers). Returns the
    parsed model."""
    model = read_weights(weights)
    infos = {i.name: i for i in shapes.infer_net(net, "TRAIN")} if net is not None else {}
    source = {layer.name: layer for layer in model.layer}
    copied, missing = 0, []
    for name, info in infos.items():
        if not info.param_shapes:
            continue
        if name not in source:
            missing += [name] if missing_ok is not None and name not in missing_ok else []
            continue
        blobs = source[name].blobs
        if len(blobs) != len(info.param_shapes):
            raise _err(weights, f"layer '{name}' has {len(blobs)} blobs but {net_path} "
                                f"expects {len(info.param_shapes)}")
        for j, (bp, want) in enumerate(zip(blobs, info.param_shapes)):
            check_blob(weights, name, j, bp, want, net_path)
        copied += 1
    if infos and copied == 0:
        raise _err(weights, f"shares no layer name with {net_path}: nothing would be copied")
    if missing:
        raise _err(weights, f"has no weights for layer(s) {', '.join(missing)} of {net_path}: they would run "
                            f"with random fillers; use weights trained for this net, or accept that with "
                            f"--allow-missing {','.join(missing)}")
    return model


# --------------------------------------------------------------------------- CLI
def parse_caffe_args(argv: list[str]) -> tuple[str | None, dict[str, str]]:
    """Caffe's gflags: `-flag value`, `-flag=value`, `--flag value`."""
    cmd = None
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            key = a.lstrip("-")
            if "=" in key:
                key, val = key.split("=", 1)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                val = argv[i + 1]
                i += 1
            else:
                val = "true"
            flags[key] = val
        elif cmd is None:
            cmd = a
        i += 1
    return cmd, flags


CAFFE_COMMANDS = ("train", "test", "time", "device_query")


def check_caffe_command(argv: list[str]) -> None:
    cmd, f = parse_caffe_args(argv)
    if cmd is not None and cmd not in CAFFE_COMMANDS:
        raise ValidationError(f"unknown caffe command '{cmd}': use {', '.join(CAFFE_COMMANDS)}")
    check_gpu_request(cmd, f)
    if cmd == "train":
        if "solver" not in f:
            raise ValidationError("caffe train needs -solver SOLVER.prototxt")
        solver = validate_solver_file(f["solver"])
        if "weights" in f and "snapshot" in f:
            raise ValidationError("give -weights or -snapshot, not both")
        if "snapshot" in f:
            snap = Path(f["snapshot"])
            if not snap.exists():
                raise _err(snap, "snapshot (.solverstate) not found")
        train_path = solver.net or solver.train_net
        if "weights" in f:
            net = load_net(train_path)
            for w in f["weights"].split(","):
                validate_weights(w, net, train_path)
        ensure_snapshot_dir(solver, train_path)
    elif cmd in ("test", "time"):
        if "model" not in f:
            raise ValidationError(f"caffe {cmd} needs -model NET.prototxt")
        phase = f.get("phase", "TEST" if cmd == "test" else "TRAIN").upper()
        net = validate_net_file(f["model"], phase)
        if "weights" in f:
            for w in f["weights"].split(","):
                validate_weights(w, net, f["model"])
        elif cmd == "test":
            raise ValidationError("caffe test needs -weights MODEL.caffemodel")
        if "iterations" in f:
            try:
                if int(f["iterations"]) <= 0:
                    raise ValueError
            except ValueError:
                raise ValidationError(f"-iterations must be a positive integer, got {f['iterations']}") from None


def _requested_gpus(cmd: str | None, f: dict[str, str]) -> tuple[str, list[int] | None] | None:
    """(how it was asked, ids or None for all) when the command would make Caffe use a GPU."""
    if f.get("gpu", "") not in ("", "false"):
        return f"-gpu {f['gpu']}", gpu.parse_ids(f["gpu"])
    if cmd == "device_query":
        raise ValidationError("caffe device_query needs -gpu ID (e.g. -gpu 0)")
    if cmd == "train" and "solver" in f:
        s = load_solver(f["solver"])
        if s.HasField("solver_mode") and s.solver_mode == s.GPU:
            return f"solver_mode: GPU in {f['solver']}", [s.device_id]
    return None


def check_gpu_request(cmd: str | None, f: dict[str, str]) -> None:
    """A GPU request Caffe cannot meet is a clear error here, not a glog abort there."""
    try:
        req = _requested_gpus(cmd, f)
        if req is None:
            return
        what, ids = req
        ids = check_gpu_ids(ids, what)
    except gpu.GpuUnavailable as e:
        raise ValidationError(str(e)) from None
    if cmd == "train" and len(ids) > 1:
        net = load_net(solver_nets(load_solver(f["solver"]))[0][0])
        if any(layer.type == "Python" for layer in net.layer):
            raise ValidationError(
                f"{what}: Caffe's multi-GPU training cannot run Python layers (this fork "
                "refuses them, as BVLC Caffe does) and our train nets read clips with one; "
                "train on one GPU (-gpu 0) or on several with "
                "`python -m tools.train --engine torch --gpus N`")


def is_solver_file(path) -> bool:
    """A prototxt that parses as a SolverParameter naming a net, not as a net."""
    text = _read_text(Path(path), "prototxt")
    try:
        text_format.Parse(text, pb2().NetParameter())
        return False
    except text_format.ParseError:
        pass
    try:
        s = text_format.Parse(text, pb2().SolverParameter())
        return bool(solver_nets(s))
    except text_format.ParseError:
        return False


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(__doc__)
            return 0 if argv else 2
        for p in argv:
            if is_solver_file(p):
                validate_solver_file(p)
            else:
                for phase in ("TRAIN", "TEST"):
                    validate_net_file(p, phase)
            print(f"{p}: ok")
        return 0
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    cli.run(main)
