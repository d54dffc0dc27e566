"""Brox et al. 2004 optical flow on the CPU: the semi-truth teacher for V2V-flow.

The paper trains V2V-flow on flow computed by Brox et al.'s method ("High accuracy optical
flow estimation based on a theory for warping", ECCV 2004) with OpenCV's GPU class. That
class is in no pip wheel, so this module implements the same energy on the CPU:

    E(w) = ∫ Ψ(|I1(x+w) − I0(x)|² + γ |∇I1(x+w) − ∇I0(x)|²) dx + α ∫ Ψ(|∇u|² + |∇v|²) dx,
    Ψ(s²) = sqrt(s² + ε²)

(brightness and gradient constancy, robust penalisers for data and smoothness), minimised
coarse to fine with warping at every level. OpenCV's ``cv2.VariationalRefinement`` solves
exactly this energy at ONE resolution (Brox's nested fixed-point scheme: outer loop
re-linearises around the current flow, i.e. warps; inner SOR solves the linear system).
``brox_flow`` wraps it in the coarse-to-fine pyramid of Brox §3 — every level starts from
the upsampled flow of the coarser level, so large displacements are found at coarse scales
and refined at fine ones.

Parameters (``BroxParams``) and why:

- ``scale = 0.9``: pyramid reduction factor (Brox uses η = 0.95, OpenCV's GPU Brox 0.8).
  Measured on the self-check (4 seeds × 8 pairs): 0.8 and 0.85 lock into a wrong minimum
  on repetitive textures (gravel: EPE 1.9 px) while 0.9 finds them (0.07 px); 0.9 costs
  ~1.5× the time of 0.8.
- ``min_size = 10``: the coarsest level's shorter side. Below ~10 px a 3×3 derivative
  stencil sees the whole image and the solution is meaningless (5 and 20 were both worse).
  Sizes are computed with ``floor`` and the loop also stops as soon as a level's size stops
  changing (rounding sizes can make the loop never end: docs/fidelity.md, "Flow teacher and
  flow pictures").
- ``alpha = 10`` (smoothness weight; OpenCV normalises the data term of 0–255 images):
  OpenCV's default 20 oversmooths 171×128 frames (self-check EPE 1.47 px at the old
  settings vs 0.48 with 10); 7 is noisier (0.24 vs 0.16).
- ``gamma = 10`` (gradient constancy weight): OpenCV's default; gradient constancy makes the
  flow robust to the brightness changes of real video (Brox §2).
- ``delta = 5`` (brightness constancy weight): OpenCV's default.
- ``fixed_point_iterations = 5`` (outer loop: re-warp and re-linearise) and
  ``sor_iterations = 5`` (inner linear solver): OpenCV's defaults; every level is warm-started
  by the previous one, so more iterations buy < 0.01 px while 3 outer iterations lose
  accuracy on hard pairs.
- ``omega = 1.6``: SOR over-relaxation, OpenCV's default.
- ``presmooth_sigma = 0.5``: Gaussian pre-smoothing of the inputs (Brox smooths the images
  before taking derivatives); it damps the MPEG block noise of UCF101 (on clean images it
  costs ~0.01 px).
- ``final_iterations = 2``: extra warm-started passes at full resolution (self-check EPE
  0.152 → 0.144 px).

Inputs are colour frames (H, W, 3) uint8 RGB, or gray (H, W) uint8; colour is converted to
gray (VariationalRefinement is single-channel). Output: (H, W, 2) float32 (u, v), the flow of
frame0 → frame1 in pixels: frame0(x) ≈ frame1(x + w(x)).

``python -m data_prep.teacher --selfcheck`` prints the EPE of this teacher, DIS and
Farneback on real-texture images (scikit-image's bundled photographs) warped by known
smooth flows of ~4.5 px at 171×128. An optional GPU path (``--gpu``) uses OpenCV's CUDA
``BroxOpticalFlow`` (the paper's implementation) only when the installed OpenCV has it.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from models import cli, metrics

cv2.setNumThreads(1)  # one thread per process: parallelism comes from --workers


@dataclass(frozen=True)
class BroxParams:
    alpha: float = 10.0
    gamma: float = 10.0
    delta: float = 5.0
    scale: float = 0.9
    min_size: int = 10
    fixed_point_iterations: int = 5
    sor_iterations: int = 5
    omega: float = 1.6
    presmooth_sigma: float = 0.5
    final_iterations: int = 2


DEFAULT = BroxParams()


def pyramid_sizes(h: int, w: int, scale: float, min_size: int) -> list[tuple[int, int]]:
    """(h, w) of every pyramid level, finest first. floor() and a stop when the size stops
    changing guarantee termination for any input (docs/fidelity.md, "Flow teacher and flow pictures")."""
    if not 0.0 < scale < 1.0:
        raise ValueError(f"pyramid scale must be in (0, 1), got {scale}")
    sizes = [(h, w)]
    while True:
        ph, pw = sizes[-1]
        nh, nw = int(np.floor(ph * scale)), int(np.floor(pw * scale))
        if min(nh, nw) < min_size or (nh, nw) == (ph, pw) or len(sizes) > 100:
            break
        sizes.append((nh, nw))
    return sizes


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3:
        if img.shape[2] != 3:
            raise ValueError(f"expected (H,W,3) RGB or (H,W) gray, got {img.shape}")
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    elif img.ndim != 2:
        raise ValueError(f"expected (H,W,3) RGB or (H,W) gray, got {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img


def _refiner(p: BroxParams):
    r = cv2.VariationalRefinement.create()
    r.setAlpha(p.alpha)
    r.setGamma(p.gamma)
    r.setDelta(p.delta)
    r.setFixedPointIterations(p.fixed_point_iterations)
    r.setSorIterations(p.sor_iterations)
    r.setOmega(p.omega)
    return r


def brox_flow(frame0: np.ndarray, frame1: np.ndarray, params: BroxParams = DEFAULT) -> np.ndarray:
    """Flow frame0 → frame1, (H, W, 2) float32 (u, v) in pixels (see the module docstring)."""
    g0, g1 = _gray(frame0), _gray(frame1)
    if g0.shape != g1.shape:
        raise ValueError(f"frames differ in size: {g0.shape} vs {g1.shape}")
    if params.presmooth_sigma > 0:
        g0 = cv2.GaussianBlur(g0, (0, 0), params.presmooth_sigma)
        g1 = cv2.GaussianBlur(g1, (0, 0), params.presmooth_sigma)
    h, w = g0.shape
    sizes = pyramid_sizes(h, w, params.scale, params.min_size)
    ref = _refiner(params)
    flow = None
    for lh, lw in reversed(sizes):
        if (lh, lw) == (h, w):
            a, b = g0, g1
        else:
            a = cv2.resize(g0, (lw, lh), interpolation=cv2.INTER_AREA)
            b = cv2.resize(g1, (lw, lh), interpolation=cv2.INTER_AREA)
        if flow is None:
            flow = np.zeros((lh, lw, 2), np.float32)
        else:
            fh, fw = flow.shape[:2]
            flow = cv2.resize(flow, (lw, lh), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= lw / fw
            flow[..., 1] *= lh / fh
        ref.calc(a, b, flow)
    for _ in range(params.final_iterations):
        ref.calc(g0, g1, flow)
    return flow


def gpu_available() -> bool:
    return hasattr(cv2, "cuda") and hasattr(cv2.cuda, "BroxOpticalFlow_create") and \
        cv2.cuda.getCudaEnabledDeviceCount() > 0


def brox_flow_gpu(frame0, frame1):  # pragma: no cover - needs a CUDA OpenCV build
    """OpenCV's CUDA Brox (the paper's implementation) with its defaults (alpha 0.197,
    gamma 50, scale 0.8, inner 5, outer 150, solver 10) on [0,1] float gray images."""
    if not gpu_available():
        raise RuntimeError("this OpenCV has no CUDA BroxOpticalFlow (pip wheels never do); "
                           "use the CPU teacher")
    a = _gray(frame0).astype(np.float32) / 255.0
    b = _gray(frame1).astype(np.float32) / 255.0
    brox = cv2.cuda.BroxOpticalFlow_create(0.197, 50.0, 0.8, 5, 150, 10)
    g = brox.calc(cv2.cuda_GpuMat(a), cv2.cuda_GpuMat(b), None)
    return g.download().astype(np.float32)


# ----------------------------------------------------------------- the accuracy self-check
def smooth_flow(rng, h: int, w: int, magnitude: float = 4.5) -> np.ndarray:
    """A random smooth flow field (H, W, 2) whose mean |w| is ``magnitude`` px: a few
    low-frequency sinusoids plus a global translation/rotation/zoom."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    f = np.zeros((h, w, 2))
    for c in range(2):
        f[..., c] += rng.normal(0, 1)
        for _ in range(3):
            kx, ky = rng.uniform(0.2, 0.8, 2) * 2 * np.pi / np.array([w, h])
            f[..., c] += rng.normal(0, 0.7) * np.sin(kx * xx + ky * yy + rng.uniform(0, 2 * np.pi))
    cx, cy = w / 2, h / 2
    rot, zoom = rng.normal(0, 0.005), rng.normal(0, 0.005)
    f[..., 0] += -rot * (yy - cy) + zoom * (xx - cx)
    f[..., 1] += rot * (xx - cx) + zoom * (yy - cy)
    f *= magnitude / np.mean(np.hypot(f[..., 0], f[..., 1]))
    return f.astype(np.float32)


def real_images() -> list[np.ndarray]:
    """Real photographs bundled inside scikit-image's wheel (no download), RGB uint8."""
    from skimage import data
    out = []
    for name in ("astronaut", "coffee", "chelsea", "camera", "coins", "grass", "gravel", "brick"):
        im = getattr(data, name)()
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, -1)
        out.append(np.ascontiguousarray(im[..., :3]))
    return out


def warped_pairs(n: int = 6, h: int = 128, w: int = 171, magnitude: float = 4.5, seed: int = 0):
    """``n`` (frame0, frame1, flow, valid) with frame0(x) = frame1(x + flow(x)) exactly up
    to bilinear interpolation. Both frames are crops of one larger image, so frame1 has real
    content around the crop; ``valid`` marks pixels whose target x+flow lies inside frame1."""
    rng = np.random.default_rng(seed)
    imgs = real_images()
    pad = 24
    out = []
    for k in range(n):
        img = imgs[k % len(imgs)]
        big = cv2.resize(img, (w + 2 * pad, h + 2 * pad), interpolation=cv2.INTER_AREA)
        flow = smooth_flow(rng, h, w, magnitude)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        mx, my = xx + pad + flow[..., 0], yy + pad + flow[..., 1]
        f0 = cv2.remap(big, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        f1 = big[pad:pad + h, pad:pad + w].copy()
        tx, ty = xx + flow[..., 0], yy + flow[..., 1]
        valid = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        out.append((f0, f1, flow, valid))
    return out


def epe(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None) -> float:
    """EPE of (H, W, 2) flows (models.metrics.epe with u, v last)."""
    return metrics.epe(pred, true, valid, axis=-1)


def dis_flow(f0, f1):
    d = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return d.calc(_gray(f0), _gray(f1), None)


def farneback_flow(f0, f1):
    return cv2.calcOpticalFlowFarneback(_gray(f0), _gray(f1), None, 0.5, 4, 15, 5, 5, 1.1, 0)


METHODS = {"brox": brox_flow, "dis": dis_flow, "farneback": farneback_flow}


def selfcheck(n: int = 6, seed: int = 0) -> dict:
    """Mean EPE (px) and ms/pair of every method on ``warped_pairs``."""
    pairs = warped_pairs(n, seed=seed)
    res = {}
    for name, fn in METHODS.items():
        errs, t0 = [], time.perf_counter()
        for f0, f1, fl, valid in pairs:
            errs.append(epe(fn(f0, f1), fl, valid))
        res[name] = {"epe": float(np.mean(errs)), "ms_per_pair": 1000 * (time.perf_counter() - t0) / n}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.teacher",
        description="Brox 2004 CPU teacher (coarse-to-fine VariationalRefinement). "
                    "The UCF101 flow database is built by python -m data_prep.ucf101 --task flow; "
                    "this command checks the teacher's accuracy or computes one pair.",
        epilog="examples:\n  python -m data_prep.teacher --selfcheck\n"
               "  python -m data_prep.teacher a.png b.png --out ab.flo\n\n"
               f"parameters: {asdict(DEFAULT)}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("frames", nargs="*", help="two image files (frame t and t+1)")
    ap.add_argument("--out", help=".flo file to write the flow to")
    ap.add_argument("--selfcheck", action="store_true",
                    help="EPE of Brox/DIS/Farneback on real images warped by known smooth ~4.5 px flows")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--gpu", action="store_true", help="OpenCV CUDA Brox (only if this OpenCV has it)")
    a = ap.parse_args(argv)
    if a.selfcheck:
        for name, r in selfcheck(a.pairs).items():
            print(f"{name:10s} EPE {r['epe']:.3f} px   {r['ms_per_pair']:.1f} ms/pair (171x128)")
        return 0
    if len(a.frames) != 2:
        ap.error("give two image files, or --selfcheck")
    ims = []
    for f in a.frames:
        im = cv2.imread(f, cv2.IMREAD_COLOR)
        if im is None:
            sys.exit(f"error: cannot read image {f}")
        ims.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
    flow = (brox_flow_gpu if a.gpu else brox_flow)(*ims)
    if a.out:
        from data_prep.flo import write_flo
        with cli.writing(a.out):
            write_flo(a.out, flow)
        print(f"wrote {a.out}")
    else:
        print(f"flow {flow.shape}, mean |w| {np.hypot(flow[..., 0], flow[..., 1]).mean():.3f} px")
    return 0


if __name__ == "__main__":
    cli.run(main)
