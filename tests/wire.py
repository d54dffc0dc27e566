"""A hand protobuf encoder for the C3D-v1.0 wire format (field numbers in docs/dialect.md),
so the converter is tested on files that no code of ours wrote with protobuf."""
from __future__ import annotations

import numpy as np

# C3D's layers (name, in channels, out channels), as in the public sport1m model.
C3D_LAYERS = [("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
              ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512)]


def varint(v):
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def ld(field, payload):
    """A length-delimited field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def vi(field, value):
    """A varint field."""
    return varint(field << 3) + varint(value)


def v10_blob(arr):
    """C3D-v1.0 BlobProto: num=1 channels=2 length=3 height=4 width=5, data=6 packed."""
    shape = arr.shape + (1,) * (5 - arr.ndim)
    return b"".join(vi(f, d) for f, d in zip((1, 2, 3, 4, 5), shape)) + \
        ld(6, arr.astype("<f4").tobytes())


def v10_net(layers, name="deepnetA"):
    """Old NetParameter: name=1, layers=2; layer: name=4, type=5 (enum), blobs=6.
    ``layers``: (name, type id, [arrays])."""
    out = ld(1, name.encode())
    for lname, tid, blobs in layers:
        out += ld(2, ld(4, lname.encode()) + vi(5, tid) + b"".join(ld(6, v10_blob(b)) for b in blobs))
    return out


def c3d_v10_model(path, rng):
    """A C3D-v1.0 model file with C3D's conv layers (random weights, bias 0.5) and ReLUs;
    returns {layer: weight array}."""
    layers, weights = [], {}
    for name, cin, cout in C3D_LAYERS:
        w = rng.normal(0, 0.01, (cout, cin, 3, 3, 3)).astype(np.float32)
        weights[name] = w
        layers += [(name, 30, [w, np.full((1, 1, 1, 1, cout), 0.5, np.float32)]),
                   ("relu" + name[4:], 18, [])]
    path.write_bytes(v10_net(layers))
    return weights
