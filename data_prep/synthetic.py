"""Synthetic videos with exact per-voxel truth, for the demo and the tests.

A scene is a textured background panning slowly plus a few textured objects, each of a
semantic class, moving with constant integer velocities. For every frame we know

- the label of every pixel (the class of the top-most object, else the background class),
- the optical flow of every pixel from frame t to t+1 (the velocity of what is there),
- the colour frame itself (RGB uint8).

Classes differ in colour and texture statistics, so a segmentation net can learn them from
appearance; motion is smooth and known, so flow predictions can be scored exactly.

    scene = make_scene(rng, frames=17, height=64, width=80, classes=4)
    scene.frames (T,H,W,3) uint8, scene.labels (T,H,W) uint8, scene.flow (T-1,H,W,2) float32

``write_gatech_like`` and ``write_ucf_like`` lay scenes out like the public downloads, so
the demo runs the real dataset tools on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Mean colours (RGB) of the classes; class 0 is the background.
CLASS_COLOURS = np.array([
    [70, 110, 190],   # 0 background ("sky")
    [200, 60, 50],    # 1
    [60, 170, 70],    # 2
    [220, 200, 60],   # 3
    [150, 70, 180],   # 4
    [60, 190, 190],   # 5
    [230, 130, 40],   # 6
    [120, 120, 120],  # 7
], dtype=np.float32)
# Colours of nearly equal luma (Rec. 601: 119-123), for colorization scenes: the gray level
# alone does not tell them apart; texture, shape and motion do.
EQUAL_LUMA_COLOURS = np.array([
    [70, 120, 240],   # 0 background, blue
    [230, 80, 60],    # 1 red
    [50, 170, 40],    # 2 green
    [200, 60, 220],   # 3 magenta
], dtype=np.float32)


@dataclass
class Scene:
    frames: np.ndarray   # (T, H, W, 3) uint8
    labels: np.ndarray   # (T, H, W) uint8
    flow: np.ndarray     # (T-1, H, W, 2) float32, (u, v) from t to t+1


def _texture(rng, h, w, colour, scale):
    """A smooth random texture around ``colour`` (band-limited noise, per channel)."""
    small = rng.standard_normal((max(2, h // scale), max(2, w // scale), 3)).astype(np.float32)
    ys = np.linspace(0, small.shape[0] - 1, h)
    xs = np.linspace(0, small.shape[1] - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, small.shape[0] - 1), np.minimum(x0 + 1, small.shape[1] - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    tex = ((1 - fy) * ((1 - fx) * small[y0][:, x0] + fx * small[y0][:, x1])
           + fy * ((1 - fx) * small[y1][:, x0] + fx * small[y1][:, x1]))
    fine = rng.standard_normal((h, w, 3)).astype(np.float32) * 0.35
    return colour[None, None, :] + 28.0 * tex + 10.0 * fine


# Per-class velocities (u, v) in px/frame for scenes where motion follows the class.
CLASS_VELOCITY = {0: (-1, 1), 1: (2, 0), 2: (0, 2), 3: (-2, -1), 4: (1, -2), 5: (-1, 2), 6: (2, 2),
                  7: (-2, 0)}


def make_scene(rng, frames=17, height=64, width=80, classes=4, objects=3, max_speed=2,
               bg_speed=1, class_motion=False, colours=CLASS_COLOURS) -> Scene:
    """One synthetic video (see the module docstring). Objects move by up to ``max_speed``
    and the background pans by up to ``bg_speed`` pixels per frame along each axis. With
    ``class_motion`` everything moves with its class's velocity (CLASS_VELOCITY), the
    background (class 0) too, so motion can also be told from appearance. ``colours``: the
    mean colour of each class (CLASS_COLOURS, or EQUAL_LUMA_COLOURS for up to 4 classes).
    The objects take the foreground classes in turn from a random first one, so every class
    is about equally frequent in a set of scenes (a random class per object left a demo
    training set with one class on 3 % of its pixels, too rare to learn)."""
    pad = (max(max_speed, bg_speed, 2) + 1) * frames + 8
    bg_v = np.array(CLASS_VELOCITY[0]) if class_motion else rng.integers(-bg_speed, bg_speed + 1, size=2)
    bg = _texture(rng, height + 2 * pad, width + 2 * pad, colours[0], 6)
    objs, first = [], int(rng.integers(0, classes - 1))
    for k in range(objects):
        cls = 1 + (first + k) % (classes - 1)
        oh, ow = int(rng.integers(height // 4, height // 2)), int(rng.integers(width // 5, width // 2))
        v = np.array(CLASS_VELOCITY[cls]) if class_motion else rng.integers(-max_speed, max_speed + 1, size=2)
        y, x = int(rng.integers(0, height - oh)), int(rng.integers(0, width - ow))
        tex = _texture(rng, oh, ow, colours[cls], [2, 3, 4, 8, 5, 6, 3, 4][cls])
        yy, xx = np.mgrid[0:oh, 0:ow]
        mask = ((yy - oh / 2) / (oh / 2)) ** 2 + ((xx - ow / 2) / (ow / 2)) ** 2 <= 1.0
        if cls % 2 == 0:  # even classes are boxes, odd ones ellipses
            mask[:] = True
        objs.append((cls, y, x, v, tex, mask))
    out = np.zeros((frames, height, width, 3), np.float32)
    lab = np.zeros((frames, height, width), np.uint8)
    vel = np.zeros((frames, height, width, 2), np.float32)
    for t in range(frames):
        oy, ox = pad - bg_v[1] * t, pad - bg_v[0] * t
        out[t] = bg[oy:oy + height, ox:ox + width]
        vel[t] = bg_v.astype(np.float32)
        for cls, y, x, v, tex, mask in objs:
            ty, tx = y + v[1] * t, x + v[0] * t
            y0, x0 = max(ty, 0), max(tx, 0)
            y1, x1 = min(ty + tex.shape[0], height), min(tx + tex.shape[1], width)
            if y1 <= y0 or x1 <= x0:
                continue
            m = mask[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
            out[t, y0:y1, x0:x1][m] = tex[y0 - ty:y1 - ty, x0 - tx:x1 - tx][m]
            lab[t, y0:y1, x0:x1][m] = cls
            vel[t, y0:y1, x0:x1][m] = v.astype(np.float32)
    frames_u8 = np.clip(out, 0, 255).astype(np.uint8)
    return Scene(frames_u8, lab, vel[:-1].copy())


def write_gatech_like(root, scenes: dict[str, list[Scene]]) -> Path:
    """Lay scenes out like GATECH: <root>/<split>/<video>/frames/%06d.png and
    <root>/<split>/<video>/labels/%06d.png (label values = class ids)."""
    from PIL import Image
    root = Path(root)
    for split, items in scenes.items():
        for i, s in enumerate(items):
            d = root / split / f"video{i:03d}"
            (d / "frames").mkdir(parents=True, exist_ok=True)
            (d / "labels").mkdir(parents=True, exist_ok=True)
            for t in range(len(s.frames)):
                Image.fromarray(s.frames[t]).save(d / "frames" / f"{t + 1:06d}.png")
                Image.fromarray(s.labels[t]).save(d / "labels" / f"{t + 1:06d}.png")
    return root


def write_video(path, frames: np.ndarray, fps: int = 25) -> Path:
    """Write frames (T,H,W,3) uint8 as an AVI (MPEG-4 part 2, like UCF101's XviD files, at
    the finest quantiser) with PyAV."""
    import av
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.width, st.height = frames.shape[2], frames.shape[1]
        st.pix_fmt = "yuv420p"
        # ffmpeg's `-qscale:v 1`: a fixed quantiser of 1 (libavcodec has no "qscale" option;
        # without these the encoder's default 200 kb/s left 8x8 blocks: luma PSNR 29 -> 39.5 dB)
        st.options = {"flags": "+qscale", "global_quality": str(118 * 1)}  # FF_QP2LAMBDA × q
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return path
