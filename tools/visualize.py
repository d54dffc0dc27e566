"""Pictures: segmentation overlays with a class palette, colour predictions beside the
gray input and the truth, flow colour wheels side by side, animated GIFs.

Everything returns or writes uint8 RGB images (NumPy (H, W, 3)); PNG/GIF via Pillow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# GATECH's 8 classes (data_prep/README.md, "Class map") + void, in the order of the label ids 0..7.
GATECH_CLASSES = ["sky", "ground", "solid", "porous", "cars", "humans", "vertical mix", "main mix"]
PALETTE = np.array([
    [70, 130, 220],   # sky
    [140, 100, 60],   # ground
    [160, 160, 160],  # solid
    [60, 160, 60],    # porous
    [220, 40, 40],    # cars
    [240, 200, 40],   # humans
    [170, 80, 200],   # vertical mix
    [40, 200, 200],   # main mix
], dtype=np.uint8)
VOID = np.array([0, 0, 0], dtype=np.uint8)


def colorize_labels(labels, ignore: int = 255) -> np.ndarray:
    lab = np.asarray(labels).astype(np.int64)
    out = np.zeros(lab.shape + (3,), np.uint8)
    ok = (lab >= 0) & (lab < len(PALETTE)) & (lab != ignore)
    out[ok] = PALETTE[lab[ok]]
    out[~ok] = VOID
    return out


def seg_overlay(frame, labels, alpha: float = 0.55) -> np.ndarray:
    f = np.asarray(frame, np.float32)
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, -1)
    c = colorize_labels(labels).astype(np.float32)
    return np.clip((1 - alpha) * f + alpha * c, 0, 255).astype(np.uint8)


def to_rgb_u8(img) -> np.ndarray:
    """Gray or RGB, float in [0,1] or uint8 → (H, W, 3) uint8."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.max() <= 1.0 + 1e-6 else a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    return a


def flow_to_color(flow, max_flow: float | None = None) -> np.ndarray:
    """Middlebury colour wheel (Baker et al.) for flow (H, W, 2); the wheel is shared with
    data_prep's Sintel tools."""
    from data_prep.flowviz import flow_to_color as f2c
    return f2c(flow, max_flow)


def labelled_row(images, titles=None, scale: int = 1, gap: int = 4) -> np.ndarray:
    """Images side by side on a white strip, each with a title above it."""
    ims = [to_rgb_u8(i) for i in images]
    if scale > 1:
        ims = [np.asarray(Image.fromarray(i).resize((i.shape[1] * scale, i.shape[0] * scale),
                                                    Image.NEAREST)) for i in ims]
    top = 14 if titles else 0
    h = max(i.shape[0] for i in ims) + top
    w = sum(i.shape[1] for i in ims) + gap * (len(ims) - 1)
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for k, im in enumerate(ims):
        canvas.paste(Image.fromarray(im), (x, top))
        if titles:
            draw.text((x + 2, 1), titles[k], fill=(0, 0, 0))
        x += im.shape[1] + gap
    return np.asarray(canvas)


def grid(rows) -> np.ndarray:
    """Stack rows (from labelled_row) vertically, padding widths."""
    w = max(r.shape[1] for r in rows)
    out = [np.pad(r, ((0, 4), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(out, 0)


def legend(classes=GATECH_CLASSES, k: int | None = None) -> np.ndarray:
    k = k or len(classes)
    canvas = Image.new("RGB", (110 * min(k, 4), 16 * ((k + 3) // 4)), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for i in range(k):
        x, y = 110 * (i % 4), 16 * (i // 4)
        d.rectangle([x + 2, y + 3, x + 12, y + 13], fill=tuple(int(c) for c in PALETTE[i]))
        d.text((x + 16, y + 2), classes[i] if i < len(classes) else str(i), fill=(0, 0, 0))
    return np.asarray(canvas)


def save_png(img, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_rgb_u8(img)).save(path)
    return path


def save_gif(frames, path, fps: int = 8) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ims = [Image.fromarray(to_rgb_u8(f)) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    return path
