"""The Brox teacher against known flows, and the .flo / colour-wheel helpers."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from data_prep import teacher
from data_prep.flo import FloError, read_flo, write_flo
from data_prep.flowviz import flow_to_color


def test_teacher_epe_on_real_textures_beats_dis_and_farneback(capsys):
    pairs = teacher.warped_pairs(8, h=128, w=171, magnitude=4.5, seed=0)
    mags = [np.hypot(f[..., 0], f[..., 1]).mean() for _, _, f, _ in pairs]
    assert all(abs(m - 4.5) < 1e-3 for m in mags)
    res = {}
    for name, fn in teacher.METHODS.items():
        t0 = time.perf_counter()
        res[name] = np.mean([teacher.epe(fn(a, b), fl, v) for a, b, fl, v in pairs])
        with capsys.disabled():   # the figure is shown even when pytest captures output
            print(f"\n[teacher self-check] {name:10s} EPE {res[name]:.3f} px "
                  f"({1000 * (time.perf_counter() - t0) / len(pairs):.1f} ms/pair, 171x128)", end="")
    assert res["brox"] <= 0.35
    assert res["brox"] < res["dis"]
    assert res["brox"] < res["farneback"]


def test_teacher_flow_direction_convention():
    """frame0(x) = frame1(x + w): content moving right gives u > 0."""
    from tests.data_fixtures import moving_texture
    fr = moving_texture(np.random.default_rng(0), frames=2, v=(3, -1))
    f = teacher.brox_flow(fr[0], fr[1])
    c = f[20:-20, 20:-20]
    assert np.median(c[..., 0]) == pytest.approx(3, abs=0.1)
    assert np.median(c[..., 1]) == pytest.approx(-1, abs=0.1)


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (9, 300), (12, 12)])
def test_pyramid_terminates_on_tiny_images(hw):
    sizes = teacher.pyramid_sizes(*hw, 0.9, 10)
    assert len(sizes) < 60 and sizes[0] == hw
    assert all(a[0] >= b[0] and a[1] >= b[1] for a, b in zip(sizes, sizes[1:]))
    if min(hw) >= 2:
        im = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
        assert teacher.brox_flow(im, im).shape == (*hw, 2)


def test_pyramid_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        teacher.pyramid_sizes(128, 171, 1.0, 10)


def test_flo_roundtrip_and_opencv_agree(tmp_path):
    f = np.random.default_rng(0).normal(0, 5, (7, 9, 2)).astype(np.float32)
    p = write_flo(tmp_path / "a.flo", f)
    assert np.array_equal(read_flo(p), f)
    assert np.array_equal(cv2.readOpticalFlow(str(p)), f)
    cv2.writeOpticalFlow(str(tmp_path / "b.flo"), f)
    assert np.array_equal(read_flo(tmp_path / "b.flo"), f)
    assert (tmp_path / "a.flo").read_bytes()[:4] == b"PIEH"


def test_flo_truncated_and_bad_magic_name_the_file(tmp_path):
    p = write_flo(tmp_path / "t.flo", np.zeros((4, 5, 2), np.float32))
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(FloError, match=r"t\.flo.*truncated"):
        read_flo(p)
    (tmp_path / "m.flo").write_bytes(b"\x00" * 40)
    with pytest.raises(FloError, match=r"m\.flo.*magic"):
        read_flo(tmp_path / "m.flo")


def test_flo_unknown_values(tmp_path):
    f = np.ones((2, 3, 2), np.float32)
    f[0, 0] = np.nan
    g = read_flo(write_flo(tmp_path / "u.flo", f), unknown_as_nan=True)
    assert np.isnan(g[0, 0]).all() and (g[1] == 1).all()


def test_colour_wheel_directions_and_saturation():
    f = np.array([[[1, 0], [0, 1], [-1, 0], [0, -1], [0, 0], [-3, 0]]], np.float32)
    c = flow_to_color(f, max_flow=1.0).astype(int)[0]
    assert c[0].tolist() == [255, 0, 0] or (c[0][0] == 255 and c[0][2] < 40)   # right: red
    assert c[1][0] > 200 and c[1][1] > 150 and c[1][2] < 40                     # down: yellow-orange
    assert c[2][2] == 255 and c[2][0] < 40                                      # left: cyan-blue
    assert c[4].tolist() == [255, 255, 255]                                     # no motion: white
    assert c[5].max() < 200  # beyond max: darkened, not clipped wrongly
    # negative and positive flows of equal size are equally saturated (flow-vis's clip bug)
    a = flow_to_color(np.array([[[2, 0], [-2, 0]]], np.float32))
    assert a[0, 0].min() == a[0, 1].min() == 0
