"""A seeded fuzz campaign over every input kind a user hands us: each mutated file must end
in a clear error (exit 2 with one "error:" line, or the reader's own exception naming the
file) or in a correct result — never a signal, a glog "Check failed", a raw traceback, or
exit 0 on a damaged file that a check should have caught."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from models.paths import REPO

CAFFE = str(REPO / ".venv" / "bin" / "caffe")
N = 15   # mutations per input kind
DEPLOY = """name: "fz"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution3D" bottom: "data" top: "conv1"
  convolution3d_param { num_output: 4 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }
layer { name: "pool1" type: "Pooling3D" bottom: "conv1" top: "pool1"
  pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
layer { name: "deconv" type: "Deconvolution3D" bottom: "pool1" top: "deconv"
  convolution3d_param { num_output: 4 kernel_size: 4 kernel_depth: 4 stride: 2 temporal_stride: 2 pad: 1
    temporal_pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "deconv" bottom: "conv1" top: "cat" }
layer { name: "pred" type: "Convolution3D" bottom: "cat" top: "pred"
  convolution3d_param { num_output: 3 kernel_size: 1 kernel_depth: 1 } }
layer { name: "prob" type: "Softmax" bottom: "pred" top: "prob" softmax_param { axis: 1 } }
"""


def byte_mutations(data: bytes, rng) -> list[tuple[str, bytes | None]]:
    """N damaged copies: truncations, bit flips, a wrong magic, absurd sizes, junk; None is a
    directory in the file's place."""
    def flip(k):
        b = bytearray(data)
        for i in rng.integers(0, len(b), k):
            b[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)

    def poke(value):
        b = bytearray(data)
        i = int(rng.integers(0, max(1, len(b) - 4)))
        b[i:i + 4] = np.array([value], "<i4").tobytes()
        return bytes(b)
    cut = [int(x) for x in rng.integers(1, len(data), 3)]
    return [("empty", b""), ("directory", None), ("magic", b"\0\0\0\0" + data[4:]),
            *[(f"cut{c}", data[:c]) for c in cut], ("half", data[:len(data) // 2]),
            ("flip1", flip(1)), ("flip8", flip(8)), ("flip64", flip(64)),
            ("huge", poke(2**31 - 1)), ("negative", poke(-7)), ("junk", data + bytes(rng.integers(0, 256, 99,
                                                                                               dtype=np.uint8))),
            ("random", bytes(rng.integers(0, 256, len(data), dtype=np.uint8))), ("zeros", bytes(len(data)))][:N]


def text_mutations(text: str, rng) -> list[tuple[str, bytes | None]]:
    """N damaged prototxts: numbers made absurd, lines dropped or doubled, NUL bytes, cuts."""
    nums = [m.span() for m in re.finditer(r"(?<=: )-?\d+(\.\d+)?", text)]
    lines = text.splitlines()

    def number(v):
        a, b = nums[int(rng.integers(0, len(nums)))]
        return text[:a] + v + text[b:]

    def drop():
        k = int(rng.integers(1, len(lines)))
        return "\n".join(lines[:k] + lines[k + 1:])
    muts = [("zero", number("0")), ("minus", number("-1")), ("int_max", number("2147483647")),
            ("uint_max", number("4000000000")), ("float", number("1.5")), ("big", number("100000")),
            ("drop1", drop()), ("drop2", drop()), ("double", "\n".join(lines + lines[-2:])),
            ("nul", text.replace("\n", "\n\0", 1)), ("cut", text[:len(text) * 2 // 3]),
            ("axis", text.replace("axis: 1", "axis: 7")), ("unknown_field", text.replace("pad: 1", "padd: 1", 1)),
            ("type", text.replace('"Concat"', '"Concatt"'))]
    out = [(n, t.encode()) for n, t in muts]
    return (out + [(n, b) for n, b in byte_mutations(text.encode(), rng) if n in ("empty", "directory")])[:N]


def place(path, content) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)


def clear(r, what: str) -> None:
    """The outcome rules for a command's run."""
    out = r.stdout + r.stderr
    assert 0 <= r.returncode < 128, f"{what}: killed by a signal (status {r.returncode})\n{out[-2000:]}"
    assert "Check failed" not in out and "Traceback" not in out and "*** " not in out, f"{what}:\n{out[-3000:]}"
    if r.returncode:
        assert any(line.startswith("error: ") for line in r.stderr.splitlines()), f"{what}:\n{out[-2000:]}"


def run(args, cwd, **env):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def good(tmp_path_factory, caffe):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "deploy.prototxt").write_text(DEPLOY)
    caffe.Net(str(d / "deploy.prototxt"), caffe.TEST).save(str(d / "w.caffemodel"))
    return d


def test_fuzz_deploy_prototxts(good, tmp_path):
    rng = np.random.default_rng(11)
    for name, data in text_mutations(DEPLOY, rng):
        f = tmp_path / "net.prototxt"
        place(f, data)
        clear(run([CAFFE, "time", "-model", str(f), "-iterations", "1"], tmp_path), f"deploy/{name}")


def test_fuzz_caffemodels(good, tmp_path):
    rng = np.random.default_rng(12)
    for name, data in byte_mutations((good / "w.caffemodel").read_bytes(), rng):
        f = tmp_path / "w.caffemodel"
        place(f, data)
        r = run([CAFFE, "time", "-model", str(good / "deploy.prototxt"), "-weights", str(f), "-iterations", "1"],
                tmp_path)
        clear(r, f"caffemodel/{name}")


def test_fuzz_solvers(good, tmp_path):
    rng = np.random.default_rng(13)
    solver = (f'net: "{good / "deploy.prototxt"}"\nbase_lr: 0.01\nlr_policy: "step"\nstepsize: 5\ngamma: 0.1\n'
              f'max_iter: 2\nsnapshot: 2\nsnapshot_prefix: "{tmp_path / "snap" / "s"}"\nmomentum: 0.9\n'
              "average_loss: 1\ndisplay: 1\n")   # no iter_size: 2^31 clips per step would run for ever
    for name, data in text_mutations(solver, rng):
        f = tmp_path / "solver.prototxt"
        place(f, data)
        r = run([CAFFE, "train", "-solver", str(f)], tmp_path, V2V_MAX_ITER="2", V2V_RUNS=str(tmp_path / "runs"))
        clear(r, f"solver/{name}")
        assert str(f) in r.stderr or r.returncode == 0, f"solver/{name}: the error must name the file: {r.stderr}"


def test_fuzz_clip_databases(tmp_path):
    from tests.data_fixtures import coord_db
    coord_db(tmp_path / "good", "flow", n=4, L=4, H=16, W=20)
    rng = np.random.default_rng(14)
    for target in ("data.mdb", "manifest.json"):
        for name, data in byte_mutations((tmp_path / "good" / target).read_bytes(), rng)[:8]:
            shutil.rmtree(tmp_path / "db", ignore_errors=True)
            shutil.copytree(tmp_path / "good", tmp_path / "db")
            place(tmp_path / "db" / target, data)
            r = run([sys.executable, "-m", "data_prep.db", "verify", str(tmp_path / "db")], tmp_path)
            what = f"db/{target}/{name}"
            if r.returncode == 1:   # verify's report: some records differ from their checksums
                assert "records match their checksums" in r.stdout and "Traceback" not in r.stderr, what
            else:
                clear(r, what)
                assert r.returncode or "4/4 records match" in r.stdout, f"{what}: {r.stdout}"


def _reader_fuzz(data: bytes, rng, read, error, tmp_path, suffix):
    """An in-process reader: the file's own error naming it, or an array."""
    for name, content in byte_mutations(data, rng):
        f = tmp_path / f"x{suffix}"
        place(f, content)
        try:
            read(f)
        except error as e:
            assert str(f) in str(e), f"{name}: {e}"


def test_fuzz_flo_bin_and_label_files(tmp_path):
    from PIL import Image

    from data_prep.c3dbin import BinError, read_c3d_bin, write_c3d_bin
    from data_prep.flo import FloError, read_flo, write_flo
    from data_prep.gatech import load_label, parse_label_map
    rng = np.random.default_rng(15)
    write_flo(tmp_path / "g.flo", rng.normal(0, 2, (12, 16, 2)).astype(np.float32))
    _reader_fuzz((tmp_path / "g.flo").read_bytes(), rng, read_flo, FloError, tmp_path, ".flo")
    write_c3d_bin(tmp_path / "g.bin", rng.integers(0, 8, (1, 4, 8, 6, 7)).astype(np.uint8))
    _reader_fuzz((tmp_path / "g.bin").read_bytes(), rng, lambda f: read_c3d_bin(f, np.uint8), BinError,
                 tmp_path, ".bin")
    Image.fromarray(rng.integers(0, 8, (10, 12)).astype(np.uint8)).save(tmp_path / "g.png")
    _reader_fuzz((tmp_path / "g.png").read_bytes(), rng, lambda f: load_label(f, parse_label_map(None), None),
                 ValueError, tmp_path, ".png")


def test_fuzz_ucf101_videos(tmp_path):
    """One UCF101 build over a good video and N damaged ones (+ a text file named .avi): each
    damaged video is either decoded into clips or reported as a bad item naming it; the
    build goes on, never crashes."""
    from data_prep.db import manifest
    from data_prep.synthetic import write_video
    rng = np.random.default_rng(16)
    good = write_video(tmp_path / "good.avi", rng.integers(0, 256, (20, 32, 48, 3), dtype=np.uint8))
    muts = byte_mutations(good.read_bytes(), rng) + [("text", b"not a video, only text\n")]
    names = ["Fuzz/v_Fuzz_good_c01.avi"] + [f"Fuzz/v_Fuzz_{name}_c01.avi" for name, _ in muts]
    (tmp_path / "UCF-101" / "Fuzz").mkdir(parents=True)
    shutil.copy(good, tmp_path / "UCF-101" / names[0])
    for n, (_, content) in zip(names[1:], muts):
        place(tmp_path / "UCF-101" / n, content)
    (tmp_path / "list.txt").write_text("".join(f"{n}\n" for n in names))
    r = run([sys.executable, "-m", "data_prep.ucf101", "--task", "color", "--root", str(tmp_path / "UCF-101"),
             "--list", str(tmp_path / "list.txt"), "--out", str(tmp_path / "db"), "--length", "8",
             "--stride", "8", "--height", "16", "--width", "16"], tmp_path)
    clear(r, "ucf101")
    man = manifest(tmp_path / "db")
    bad = {b["item"]: b["error"] for b in man["bad"]}
    built = {rec["item"] for rec in man["records"]}
    assert names[0] in built and names[0] not in bad, r.stderr[-2000:]
    for n in names[1:]:
        assert (n in bad) != (n in built), f"{n}: neither clips nor a reported error"
        assert n not in bad or "\n" not in bad[n], f"{n}: {bad[n]}"
    assert {"Fuzz/v_Fuzz_empty_c01.avi", "Fuzz/v_Fuzz_directory_c01.avi", "Fuzz/v_Fuzz_text_c01.avi"} <= set(bad)
    assert "a folder, not a video file" in bad["Fuzz/v_Fuzz_directory_c01.avi"]


C3D_NET = """name: "c3d"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 16 dim: 16 } } }
layer { name: "conv1a" type: "Convolution3D" bottom: "data" top: "conv1a"
  convolution3d_param { num_output: 4 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }
layer { name: "conv2a" type: "Convolution3D" bottom: "conv1a" top: "conv2a"
  convolution3d_param { num_output: 2 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }
"""


def c3d_mutations(rng) -> list[tuple[str, bytes | None]]:
    """A tiny C3D-v1.0 model (tests/wire.py) damaged byte-wise, and made wrong field by field:
    NaN / inf weights, absurd or zero dims, a blob without data, fields of the wrong wire type."""
    from tests.wire import ld, v10_blob, vi
    w1 = rng.normal(0, 0.1, (4, 3, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (2, 4, 3, 3, 3)).astype(np.float32)
    b1, b2 = np.ones((1, 1, 1, 1, 4), np.float32), np.zeros((1, 1, 1, 1, 2), np.float32)

    def layer(name: bytes, kind: bytes, blobs: list[bytes]) -> bytes:   # kind: the encoded type field
        return ld(2, ld(4, name) + kind + b"".join(ld(6, b) for b in blobs))

    def net(conv1a=None, kind=vi(5, 30)):
        """The model; ``conv1a``: its first blob (encoded) in place of the weights."""
        return (ld(1, b"c3d") + layer(b"conv1a", kind, [conv1a or v10_blob(w1), v10_blob(b1)])
                + layer(b"relu1a", vi(5, 18), []) + layer(b"conv2a", vi(5, 30), [v10_blob(w2), v10_blob(b2)]))
    nan, inf = w1.copy(), w1.copy()
    nan[1, 2, 0, 1, 2], inf[0, 0, 0, 0, 0] = np.nan, -np.inf
    dims = b"".join(vi(f, d) for f, d in zip((1, 2, 3, 4, 5), (4, 3, 3, 3, 3)))
    big = b"".join(vi(f, d) for f, d in zip((1, 2, 3, 4, 5), (2**31 - 1, 2**31 - 1, 2**31 - 1, 3, 3)))
    crafted = [("nan", net(v10_blob(nan))), ("inf", net(v10_blob(inf))),
               ("absurd_dims", net(big + ld(6, w1.tobytes()))),
               ("zero_dim", net(vi(1, 4) + vi(2, 0) + vi(3, 3) + vi(4, 3) + vi(5, 3))),
               ("no_data", net(dims)), ("short_data", net(dims + ld(6, w1.tobytes()[:-4]))),
               ("dims_as_bytes", net(ld(1, b"\4") + ld(6, w1.tobytes()))),
               ("data_as_varint", net(dims + vi(6, 7))), ("type_as_text", net(kind=ld(5, b"CONVOLUTION3D"))),
               ("unknown_type", net(kind=vi(5, 99))), ("relu_with_weights", net(kind=vi(5, 18)))]
    return byte_mutations(net(), rng) + crafted


def test_fuzz_c3d_models_and_means(tmp_path):
    """tools.convert_c3d on damaged C3D-v1.0 models: a clear error, or weights that fit the
    net and are all finite; the mean reader on damaged means: its error naming the file, or
    a finite mean."""
    from models.c3d_convert import C3DFormatError, read_v1_mean
    from models.validate import load_net, validate_weights
    from tests.wire import v10_blob
    (tmp_path / "net.prototxt").write_text(C3D_NET)
    rng = np.random.default_rng(17)
    for name, data in c3d_mutations(rng):
        f, out = tmp_path / "c3d_model", tmp_path / "out.caffemodel"
        place(f, data)
        out.unlink(missing_ok=True)
        r = run([sys.executable, "-m", "tools.convert_c3d", str(f), "-o", str(out), "--net",
                 str(tmp_path / "net.prototxt")], tmp_path)
        clear(r, f"c3d/{name}")
        assert r.returncode or name not in ("unknown_type", "relu_with_weights"), \
            f"c3d/{name}: a weighted layer of a damaged type dropped, exit 0"
        if r.returncode == 0:
            try:
                validate_weights(out, load_net(tmp_path / "net.prototxt"), "net.prototxt")
            except ValueError as e:
                pytest.fail(f"c3d/{name}: exit 0 with unusable weights: {e}")
        else:
            assert str(f) in r.stderr, f"c3d/{name}: the error must name the file: {r.stderr}"
    mean = rng.uniform(0, 255, (1, 3, 8, 6, 7)).astype(np.float32)
    _reader_fuzz(v10_blob(mean), rng, lambda f: finite_mean(read_v1_mean(f)), C3DFormatError, tmp_path,
                 ".binaryproto")


def finite_mean(m: np.ndarray) -> np.ndarray:
    assert m.ndim == 4 and np.isfinite(m).all(), m.shape
    return m
