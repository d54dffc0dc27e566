"""C3D-v1.0 weights and means → files our engine (and C3D-v1.1) loads.

The authors' public C3D model (``conv3d_deepnetA_sport1m_iter_1900000``) and mean
(``sport1m_train16_128_mean.binaryproto``) are in C3D-v1.0's format: an old-style
NetParameter (``layers`` = field 2, V1 layer type enums) whose BlobProtos have five
dimensions num=1, channels=2, length=3, height=4, width=5 and data=6. Mainline Caffe
reads them silently wrong (length lands in height, weights in diff), so we decode the
protobuf wire format ourselves — no engine needed — and write a mainline caffemodel
(``layer`` = field 100, BlobProto.shape = field 7, data = field 5):

  CONVOLUTION3D (30)   → Convolution3D    weights (out, in, kd, kh, kw), bias (1,1,1,1,out)
  DECONVOLUTION3D (34) → Deconvolution3D  weights (in, out, kd, kh, kw), bias (1,1,1,1,out)
  INNER_PRODUCT (14)   → InnerProduct     (1,1,1,N,K) → (N,K), bias (1,1,1,1,N) → (N,)
                                          (written only with keep_all: V2V has no fc)

Shapes are read from the file; nothing is assumed about sizes. With a target net, each
layer is ``copied`` (same name, same shapes: `-weights` will copy it), ``skipped`` (not in
the net, or no weights) or ``mismatched`` (same name, other shapes: left out of the output
so `-weights` does not abort). The mean becomes a float32 .npy of shape (C, L, H, W).

    convert_model(src, dst, net=None, keep_all=False) -> list[LayerReport]
    convert_mean(src, dst) -> np.ndarray
Errors: ``C3DFormatError`` (a ValueError) naming the file and what it is instead.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import cli

V1_TYPES = {30: "Convolution3D", 34: "Deconvolution3D", 14: "InnerProduct", 4: "Convolution"}
V1_NAMES = {4: "CONVOLUTION", 14: "INNER_PRODUCT", 30: "CONVOLUTION3D", 31: "POOLING3D",
            34: "DECONVOLUTION3D", 18: "RELU", 5: "DATA", 6: "DROPOUT", 20: "SOFTMAX",
            21: "SOFTMAX_LOSS", 35: "VIDEO_SEGMENTATION_DATA", 37: "VOXEL_SOFTMAX_LOSS",
            39: "VOXEL_CUSTOM_LOSS", 32: "VIDEO_DATA"}


class C3DFormatError(ValueError):
    pass


# --------------------------------------------------------------------------- wire format
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise ValueError("bad varint")


def fields(buf: bytes):
    """Yield (field number, wire type, value) of a serialized message. Value: int
    (varint, fixed32/64 raw) or bytes (length-delimited)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        fno, wt = key >> 3, key & 7
        if fno == 0:
            raise ValueError("field number 0")
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            if i + 8 > n:
                raise ValueError("truncated fixed64")
            v, i = struct.unpack_from("<Q", buf, i)[0], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise ValueError("truncated length-delimited field")
            v, i = buf[i:i + ln], i + ln
        elif wt == 5:
            if i + 4 > n:
                raise ValueError("truncated fixed32")
            v, i = struct.unpack_from("<I", buf, i)[0], i + 4
        else:
            raise ValueError(f"wire type {wt} (groups or garbage)")
        yield fno, wt, v


def _key(fno, wt):
    return _enc_varint((fno << 3) | wt)


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(fno, payload: bytes) -> bytes:
    return _key(fno, 2) + _enc_varint(len(payload)) + payload


# --------------------------------------------------------------------------- reading v1.0
def read_v1_blob(buf: bytes, where: str) -> np.ndarray:
    """A C3D-v1.0 BlobProto → array of shape (num, channels, length, height, width)."""
    dims = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    data = []
    seen = set()
    for fno, wt, v in fields(buf):
        seen.add(fno)
        if fno in dims:
            if wt != 0:
                what = ("a mainline BlobProto (data in field 5)" if fno == 5 else
                        f"not a C3D-v1.0 BlobProto (field {fno} has wire type {wt})")
                raise C3DFormatError(f"{where}: {what}")
            dims[fno] = v
        elif fno == 6:
            if wt == 2:
                data.append(np.frombuffer(v, "<f4"))
            elif wt == 5:
                data.append(np.frombuffer(struct.pack("<I", v), "<f4"))
            else:
                raise C3DFormatError(f"{where}: blob data has wire type {wt}")
        elif fno == 7 and wt == 2:
            pass  # diff (packed floats): ignored
        elif fno in (8, 9):
            raise C3DFormatError(f"{where}: a mainline BlobProto (double data, field {fno})")
    arr = np.concatenate(data) if data else np.zeros(0, "<f4")
    shape = tuple(dims[k] for k in (1, 2, 3, 4, 5))
    if 5 not in seen and 3 not in seen and 4 not in seen and not data:
        raise C3DFormatError(f"{where}: empty blob")
    if 0 in shape:
        raise C3DFormatError(f"{where}: blob dims {shape} (num, channels, length, height, width) "
                             "include a 0: not a C3D-v1.0 blob")
    if math.prod(shape) != arr.size:
        raise C3DFormatError(f"{where}: blob dims {shape} (num, channels, length, height, width) "
                             f"hold {math.prod(shape)} values but the data has {arr.size}: "
                             "not a C3D-v1.0 blob")
    return arr.astype(np.float32).reshape(shape)


def finite(arr: np.ndarray, where: str) -> np.ndarray:
    """``arr``, or a C3DFormatError when it holds NaN or inf (unusable weights or mean)."""
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise C3DFormatError(f"{where}: {bad} NaN/inf values (of {arr.size}): the file is damaged")
    return arr


@dataclass
class V1Layer:
    name: str
    type_id: int
    blobs: list

    @property
    def type_name(self):
        return V1_NAMES.get(self.type_id, f"type {self.type_id}")


def _read(path: Path) -> bytes:
    if not path.exists():
        raise C3DFormatError(f"{path}: file not found")
    try:
        return path.read_bytes()
    except OSError as e:   # a directory, no permission
        raise C3DFormatError(f"{path}: cannot read ({e.strerror})") from None


def read_v1_net(path) -> tuple[str, list[V1Layer]]:
    """Parse a C3D-v1.0 caffemodel; refuse anything else with a clear error."""
    path = Path(path)
    buf = _read(path)
    if not buf:
        raise C3DFormatError(f"{path}: empty file")
    name, layers, new_layers = "", [], 0
    try:
        top = list(fields(buf))
    except ValueError as e:
        raise C3DFormatError(f"{path}: not a Caffe model (protobuf wire format: {e})") from None
    for fno, wt, v in top:
        if fno == 1 and wt == 2:
            name = v.decode("utf-8", "replace")
        elif fno == 100 and wt == 2:
            new_layers += 1
        elif fno == 2 and wt == 2:
            layers.append(v)
    if new_layers:
        raise C3DFormatError(f"{path}: a new-format caffemodel (`layer` field 100), not C3D-v1.0; "
                             "it needs no conversion (give it to -weights directly)")
    if not layers:
        raise C3DFormatError(f"{path}: not a C3D-v1.0 caffemodel (no `layers` entries)")
    out = []
    for k, lb in enumerate(layers):
        lname, ltype, blobs = f"#{k}", -1, []
        try:
            lf = list(fields(lb))
        except ValueError as e:
            raise C3DFormatError(f"{path}: layer #{k} is not a message ({e}): not a Caffe model") from None
        for fno, wt, v in lf:
            if fno == 4 and wt == 2:
                lname = v.decode("utf-8", "replace")
            elif fno == 5 and wt == 0:
                ltype = v
            elif fno == 1 and wt == 2:
                raise C3DFormatError(f"{path}: a V0 (2014 pre-V1) caffemodel, not C3D-v1.0")
        for fno, wt, v in lf:
            if fno == 6 and wt == 2:
                try:
                    blobs.append(read_v1_blob(v, f"{path}: layer '{lname}' blob {len(blobs)}"))
                except C3DFormatError as e:
                    raise C3DFormatError(f"{e} (BVLC V1 caffemodels with 4D blobs are not "
                                         "C3D-v1.0 files)") from None
                except ValueError as e:
                    raise C3DFormatError(f"{path}: layer '{lname}': bad blob ({e})") from None
                finite(blobs[-1], f"{path}: layer '{lname}' blob {len(blobs) - 1}")
        out.append(V1Layer(lname, ltype, blobs))
    return name, out


def read_v1_mean(path) -> np.ndarray:
    """A C3D-v1.0 mean binaryproto → float32 (C, L, H, W)."""
    path = Path(path)
    buf = _read(path)
    try:
        arr = read_v1_blob(buf, str(path))
    except C3DFormatError as e:
        raise C3DFormatError(f"{e}; expected a C3D-v1.0 5D mean binaryproto "
                             "(num, channels, length, height, width)") from None
    except ValueError as e:
        raise C3DFormatError(f"{path}: not a binaryproto ({e})") from None
    if arr.shape[0] != 1:
        raise C3DFormatError(f"{path}: mean has num={arr.shape[0]}, expected 1")
    return finite(arr[0], f"{path}: mean")


# --------------------------------------------------------------------------- writing
def _blob_bytes(arr: np.ndarray) -> bytes:
    shape = _ld(1, b"".join(_enc_varint(int(d)) for d in arr.shape))  # BlobShape.dim packed
    return _ld(7, shape) + _ld(5, np.ascontiguousarray(arr, "<f4").tobytes())


def _layer_bytes(name: str, type_: str, blobs) -> bytes:
    body = _ld(1, name.encode()) + _ld(2, type_.encode())
    for b in blobs:
        body += _ld(7, _blob_bytes(b))
    return _ld(100, body)


def target_blobs(layer: V1Layer):
    """Our layer type and blobs for a v1.0 layer with weights (None if unsupported)."""
    t = V1_TYPES.get(layer.type_id)
    if t in ("Convolution3D", "Deconvolution3D"):
        return t, [b for b in layer.blobs]
    if t == "InnerProduct":
        w = layer.blobs[0].reshape(layer.blobs[0].shape[-2:])
        rest = [b.reshape(-1) for b in layer.blobs[1:]]
        return t, [w] + rest
    if t == "Convolution" and all(b.shape[2] == 1 for b in layer.blobs):
        w = layer.blobs[0][:, :, 0]
        return t, [w] + [b.reshape(-1) for b in layer.blobs[1:]]
    return None


@dataclass
class LayerReport:
    name: str
    v1_type: str
    action: str        # copied | skipped | mismatched
    shapes: list
    note: str = ""

    def line(self) -> str:
        sh = ", ".join("×".join(map(str, s)) for s in self.shapes)
        return f"{self.action:10s} {self.name:12s} {self.v1_type:16s} {sh}" + (f"  ({self.note})" if self.note else "")


def net_param_shapes(net_path) -> dict:
    """{layer name: [param shapes]} of a net prototxt (deploy nets give full shapes)."""
    from models import shapes
    from models.validate import load_net
    net = load_net(net_path)
    out = {}
    for phase in ("TEST", "TRAIN"):
        try:
            infos = shapes.infer_net(net, phase)
        except shapes.ShapeError:
            continue
        for i in infos:
            if i.param_shapes:
                out.setdefault(i.name, (i.type, i.param_shapes))
    return out


def convert_model(src, dst, net=None, keep_all: bool = False) -> list[LayerReport]:
    """Convert ``src`` (C3D-v1.0 caffemodel) to ``dst``. ``net``: a prototxt to check
    names/shapes against (mismatched layers are left out). Without ``net`` every conv
    layer is written (fc too with keep_all)."""
    name, layers = read_v1_net(src)
    want = net_param_shapes(net) if net else None
    reports, chunks = [], []
    for layer in layers:
        if not layer.blobs:
            continue
        shapes_in = [b.shape for b in layer.blobs]
        tb = target_blobs(layer)
        if tb is None:
            raise C3DFormatError(f"{src}: layer '{layer.name}' has {len(layer.blobs)} weight blob(s) "
                                 f"{shapes_in} but its type is {layer.type_name}, which has none in "
                                 "C3D-v1.0: the file is damaged")
        t, blobs = tb
        out_shapes = [b.shape for b in blobs]
        if want is not None:
            if layer.name not in want:
                reports.append(LayerReport(layer.name, layer.type_name, "skipped", out_shapes,
                                           f"no layer '{layer.name}' in {net}"))
                if not keep_all:
                    continue
            else:
                wt, ws = want[layer.name]
                ok = (wt == t and len(ws) == len(out_shapes) and
                      all(len(w) == len(s) and all(a is None or a == b for a, b in zip(w, s))
                          for w, s in zip(ws, out_shapes)))
                if not ok:
                    reports.append(LayerReport(layer.name, layer.type_name, "mismatched", out_shapes,
                                               f"{net} has {wt} " + ", ".join("×".join(
                                                   "?" if a is None else str(a) for a in w) for w in ws)))
                    continue
                reports.append(LayerReport(layer.name, layer.type_name, "copied", out_shapes))
        else:
            if t == "InnerProduct" and not keep_all:
                reports.append(LayerReport(layer.name, layer.type_name, "skipped", out_shapes,
                                           "fully connected; V2V has none (keep with --all)"))
                continue
            reports.append(LayerReport(layer.name, layer.type_name, "copied", out_shapes))
        chunks.append(_layer_bytes(layer.name, t, blobs))
    if not any(r.action == "copied" for r in reports):
        raise C3DFormatError(f"{src}: nothing to copy" + (f" into {net}" if net else "") + ": "
                             + "; ".join(r.line() for r in reports[:5]))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".part")
    with cli.writing(tmp):
        tmp.write_bytes(_ld(1, (name or "c3d").encode()) + b"".join(chunks))
    tmp.replace(dst)
    return reports


def convert_mean(src, dst) -> np.ndarray:
    mean = read_v1_mean(src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with cli.writing(dst):
        np.save(dst, mean)
    return mean
